"""A model that ranks nothing is called chance in every output (issue 29, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stage2_boost.chance import NO_EVIDENCE, chance_text
from stage2_boost.cli import format_run_summary
from stage2_boost.compare import compare_evidence
from stage2_boost.config import Stage2Config
from stage2_boost.evidence import read_evidence
from stage2_boost.model.predict import format_predict_summary, run_predict
from stage2_boost.outputs import read_runs
from stage2_boost.runs import format_runs
from stage2_boost.train import run_training
from tests.stage2.helpers import FAST, make_embeddings, synthetic_manifest, write_stage1


@pytest.mark.parametrize(
    ("ci", "calibration", "says"),
    [
        ((0.38, 0.60), None, "contains 0.5"),
        ((0.20, 0.45), None, "below 0.5"),
        (
            (0.60, 0.70),
            {"brier": 0.0180, "brier_base_rate": 0.0177},
            "no better than the base rate",
        ),
        ((0.60, 0.70), {"brier": 0.0170, "brier_base_rate": 0.0177}, None),
        ((0.51, 0.70), None, None),
    ],
)
def test_chance_text(ci: tuple[float, float], calibration: dict | None, says: str | None) -> None:
    text = chance_text(ci, calibration)
    assert (text is None) if says is None else (says in str(text))


@pytest.fixture
def noise(tmp_path: Path) -> Path:
    """Labels shuffled across rows: nothing in the features predicts them."""
    manifest = synthetic_manifest()
    train = manifest["split"] == "train"
    shuffled = manifest.loc[train, "target"].sample(frac=1.0, random_state=3).to_numpy()
    manifest.loc[train, "target"] = shuffled
    vectors = np.random.default_rng(5).normal(0, 1, (len(manifest), 16)).astype(np.float32)
    return write_stage1(tmp_path / "noise", manifest, {"bb": vectors})


def test_a_chance_run_says_so_everywhere(noise: Path, tmp_path: Path) -> None:
    config = Stage2Config(features_dir=noise, n_components=4, ablate=True,
                          feature_groups=("metadata", "embedding"), **FAST | {"report": True})  # fmt: skip
    result = run_training(config)
    metrics = result.metrics
    low, high = metrics["oof_auc_ci95"]
    assert low <= 0.5 <= high, "the fixture must be at chance"
    assert NO_EVIDENCE in metrics["chance"]
    assert "CHANCE LEVEL" in format_run_summary(metrics, result.out_dir)
    assert "cannot be read" in metrics["ablation"]["unreadable"]
    assert "cannot be read" in format_run_summary(metrics, result.out_dir)
    report = result.out_dir / "report"
    for page in ("report.md", "report.html"):
        assert NO_EVIDENCE in (report / page).read_text(), page
    assert "cannot be read" in (report / "report.html").read_text()
    saved = json.loads((result.out_dir / "metrics.json").read_text())
    assert saved["chance"] == metrics["chance"]
    assert "chance" in format_runs(read_runs(result.out_dir / "runs.csv"))
    run = read_evidence(result.out_dir, result.run_id)
    compared = compare_evidence(run, run, n_boot=50)
    assert any(NO_EVIDENCE in note for note in compared["notes"])
    scored = run_predict(result.out_dir / "model", noise, tmp_path / "scored")
    assert any(NO_EVIDENCE in w for w in scored.warnings)
    assert "WARNING" in format_predict_summary(scored)
    assert NO_EVIDENCE in (tmp_path / "scored" / "predictions.html").read_text()


def test_a_skilled_run_is_not_called_chance(tmp_path: Path) -> None:
    manifest = synthetic_manifest()
    features = write_stage1(tmp_path / "f", manifest, {"bb": make_embeddings(manifest)})
    metrics = run_training(Stage2Config(features_dir=features, n_components=4, **FAST)).metrics
    assert metrics["chance"] is None and "CHANCE" not in format_run_summary(metrics, tmp_path)


def test_scoring_says_when_every_image_gets_the_same_probability(tmp_path: Path) -> None:
    manifest = synthetic_manifest()
    features = write_stage1(tmp_path / "f", manifest, {})
    config = Stage2Config(features_dir=features, feature_groups=("metadata", "patient"), **FAST)
    run_training(config)
    bare = manifest[manifest["split"] == "test"].assign(
        age_approx=np.nan, sex=None, anatom_site_general_challenge=None,
        patient_id=lambda t: "own_" + t["image_name"],
    )  # fmt: skip
    scored = run_predict(config.stage2_dir / "model", write_stage1(tmp_path / "bare", bare, {}),
                         tmp_path / "scored")  # fmt: skip
    assert any("the same probability" in w for w in scored.warnings), scored.warnings


def test_runs_says_untuned_where_no_trial_ran() -> None:
    import pandas as pd

    log = pd.DataFrame([{"time": "t", "run_id": "r1", "feature_groups": "metadata", "backbones": "-",
                         "trials": 0, "oof_auc": 0.7, "ci_low": 0.65, "ci_high": 0.75,
                         "tuning_auc": float("nan"), "seconds": 1.0}])  # fmt: skip
    table = format_runs(log)
    assert "untuned" in table and "nan" not in table.lower()
