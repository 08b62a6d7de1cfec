"""Every run keeps its evidence; ``compare`` pairs two runs by patient; ``--ablate`` says what
each feature group is worth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage2_boost.cli import main
from stage2_boost.compare import config_differences
from stage2_boost.config import Stage2Config
from stage2_boost.errors import OutputError
from stage2_boost.evidence import read_evidence, run_folder, write_evidence
from stage2_boost.model.load import read_manifest
from stage2_boost.outputs import RUNS_FILE, append_run
from stage2_boost.train import run_training
from tests.stage2.helpers import FAST, direct_paired_interval


def _fake_run(stage2: Path, run_id: str, oof: pd.DataFrame, auc: float) -> None:
    """A run's evidence and log row, as training writes them."""
    write_evidence(stage2, run_id, oof, None, {"run_id": run_id, "models": {}, "oof_auc": auc})
    append_run({"run_id": run_id, "oof_auc": auc, "ci_low": 0, "ci_high": 1, "n_train": len(oof)},
               stage2 / RUNS_FILE)  # fmt: skip


def _two_runs(stage2: Path, n: int = 1200) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    target = (rng.random(n) < 0.1).astype(int)
    patients = np.array([f"P{p:03d}" for p in rng.integers(0, 150, n)])
    score_a = rng.normal(size=n) + 1.0 * target
    score_b = score_a + 0.5 * target + rng.normal(0, 0.3, n)  # B better by a known margin
    base = pd.DataFrame({"image_name": [f"I{i:05d}" for i in range(n)], "patient_id": patients,
                         "fold": rng.integers(0, 5, n), "target": target})  # fmt: skip
    _fake_run(stage2, "20260101-000000-aaaaaa", base.assign(blend=score_a), 0.7)
    _fake_run(stage2, "20260102-000000-bbbbbb", base.assign(blend=score_b), 0.8)
    return base, score_a, score_b


def test_compare_gives_the_paired_interval_of_a_direct_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, score_a, score_b = _two_runs(tmp_path)
    assert main(["compare", "--out", str(tmp_path), "--json", "--bootstrap", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_a"].endswith("aaaaaa") and result["run_b"].endswith("bbbbbb")
    assert result["n_images"] == len(base)
    target = base["target"].to_numpy()
    want = direct_paired_interval(target, score_a, score_b, base["patient_id"].to_numpy(), 200, 42)
    assert np.allclose(result["delta_auc_ci95"], want, atol=1e-6)
    assert result["delta_auc_ci95"][0] > 0 and result["p_delong"] < 0.05
    for key in (
        "delta_pauc80",
        "delta_pauc80_ci95",
        "delta_sens_at_spec95",
        "delta_review_at_sens80",
    ):
        assert key in result, key
    assert main(["compare", "aaa", "bbb", "--out", str(tmp_path)]) == 0
    assert "bbbbbb is better than 20260101-000000-aaaaaa: ΔAUC +" in capsys.readouterr().out


def test_compare_refuses_runs_that_disagree_on_a_label_or_share_no_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, score_a, _ = _two_runs(tmp_path)
    flipped = base.assign(blend=score_a)
    flipped.loc[7, "target"] = 1 - flipped.loc[7, "target"]
    _fake_run(tmp_path, "20260103-000000-cccccc", flipped, 0.7)
    assert main(["compare", "aaa", "ccc", "--out", str(tmp_path)]) == 2
    assert "disagree on the label of 1 image(s), e.g. I00007" in capsys.readouterr().err
    other = base.assign(blend=score_a, image_name=[f"X{i}" for i in range(len(base))])
    _fake_run(tmp_path, "20260104-000000-dddddd", other, 0.7)
    from stage2_boost.compare import compare_evidence

    with pytest.raises(OutputError, match="share no images"):
        compare_evidence(read_evidence(tmp_path, "20260101-000000-aaaaaa"),
                         read_evidence(tmp_path, "20260104-000000-dddddd"))  # fmt: skip


def test_compare_on_a_subset_and_other_folds_says_so(tmp_path: Path) -> None:
    from stage2_boost.compare import compare_evidence, format_comparison

    base, _, score_b = _two_runs(tmp_path)
    b = base.assign(blend=score_b, fold=(base["fold"] + 1) % 5).iloc[100:]
    _fake_run(tmp_path, "20260105-000000-eeeeee", b, 0.8)
    result = compare_evidence(read_evidence(tmp_path, "20260101-000000-aaaaaa"),
                              read_evidence(tmp_path, "20260105-000000-eeeeee"), n_boot=100)  # fmt: skip
    assert result["n_images"] == len(base) - 100 and result["only_a"] == 100
    assert not result["same_folds"]
    text = format_comparison(result)
    assert "100 image(s) only in" in text and "different evaluation fold splits" in text


def test_every_run_keeps_its_model_and_evidence_and_is_compared_with_earlier_ones(
    features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Stage2Config(features_dir=features, out_dir=tmp_path / "s2", n_components=4,
                          feature_groups=("metadata",), **FAST | {"report": True})  # fmt: skip
    first = run_training(config)
    second = run_training(replace(config, feature_groups=("metadata", "probe")))
    stage2 = config.stage2_dir
    for run in (first, second):
        assert read_manifest(run_folder(stage2, run.run_id) / "model")["run_id"] == run.run_id
        assert (run_folder(stage2, run.run_id) / "oof.parquet").is_file()
    assert read_manifest(stage2 / "model")["run_id"] == second.run_id  # the newest
    versus = second.metrics["versus"]
    assert versus["previous"]["run"] == first.run_id
    low, high = versus["previous"]["delta_auc_ci95"]
    assert low <= versus["previous"]["delta_auc"] <= high
    # the fixture's label lives in embedding column 0: adding its linear probe must help
    assert low > 0 and "is better than" in versus["previous"]["verdict"]
    capsys.readouterr()
    assert main(["runs", "--out", str(stage2)]) == 0
    table = capsys.readouterr().out
    assert f"{versus['previous']['delta_auc']:+.4f}" in table and "yes" in table
    assert main(["compare", "--out", str(stage2), "--baseline", "best"]) == 0
    printed = capsys.readouterr().out
    assert second.run_id in printed
    assert (
        "what differs (A -> B): " in printed
        and "feature groups metadata -> metadata,probe" in printed
    )
    assert (
        "Against the previous run, also the best" in (stage2 / "report" / "report.html").read_text()
    )
    assert main(["compare", "--out", str(stage2), "--json"]) == 0  # what the run itself printed
    result = json.loads(capsys.readouterr().out)
    assert np.allclose(result["delta_auc_ci95"], versus["previous"]["delta_auc_ci95"], atol=1e-6)


def test_ablate_reports_what_each_group_is_worth(
    features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Stage2Config(features_dir=features, out_dir=tmp_path / "s2", n_components=4,
                          feature_groups=("metadata", "patient", "embedding", "probe"),
                          ablate=True, **FAST | {"report": True})  # fmt: skip
    metrics = run_training(config).metrics
    rows = {row["group"]: row for row in metrics["ablation"]["groups"]}
    assert set(rows) == {"metadata", "patient", "embedding", "probe", "embedding+probe"}
    # the label is in the image: leaving out every image feature costs most
    assert rows["embedding+probe"]["delta_auc_ci95"][0] > 0
    assert max(rows, key=lambda g: rows[g]["delta_auc"]) == "embedding+probe"
    for row in rows.values():
        low, high = row["delta_auc_ci95"]
        assert low <= row["delta_auc"] <= high
        assert abs(row["delta_auc"] - (metrics["oof_auc"] - row["oof_auc_without"])) < 1e-5
    report = (config.stage2_dir / "report" / "report.md").read_text()
    assert "## What each feature group is worth" in report and "| embedding+probe |" in report
    assert "pAUC above 80% sensitivity" in report


def test_ablating_a_finished_run_adds_its_rows_to_that_run(
    features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """``ablate`` records no new run and replaces no model, shows progress, and gives the rows
    ``train --ablate`` gives (issue 29, item 5)."""
    import logging

    groups = ("metadata", "patient", "embedding", "probe")
    config = Stage2Config(features_dir=features, out_dir=tmp_path / "s2", n_components=4,
                          feature_groups=groups, **FAST | {"report": True})  # fmt: skip
    run = run_training(config)
    stage2 = config.stage2_dir
    model_before = (stage2 / "model" / "model.json").read_bytes()
    with caplog.at_level(logging.INFO):
        assert main(["ablate", "--out", str(stage2)]) == 0
    assert "ablation 5/5: without embedding+probe" in caplog.text
    assert "embedding+probe" in capsys.readouterr().out
    assert len(pd.read_csv(stage2 / RUNS_FILE)) == 1
    assert (stage2 / "model" / "model.json").read_bytes() == model_before
    kept = read_evidence(stage2, run.run_id).metrics["ablation"]
    assert json.loads((stage2 / "metrics.json").read_text())["ablation"] == kept
    assert "| embedding+probe |" in (stage2 / "report" / "report.md").read_text()
    direct = run_training(replace(config, out_dir=tmp_path / "direct", ablate=True)).metrics
    expected = {r["group"]: r["delta_auc"] for r in direct["ablation"]["groups"]}
    assert {r["group"]: r["delta_auc"] for r in kept["groups"]} == pytest.approx(expected, abs=1e-6)


def test_what_differs_names_a_change_of_code_or_libraries(
    features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of the same settings on different code: the verdict must not read as the same
    data and parameters."""
    import stage2_boost.train as train

    config = Stage2Config(features_dir=features, out_dir=tmp_path / "s2", n_components=4,
                          feature_groups=("metadata",), **FAST)  # fmt: skip
    first = run_training(config)
    monkeypatch.setattr(train, "environment_digest", lambda: "f" * 64)
    second = run_training(config)
    changes = {
        d["setting"]: (d["a"], d["b"]) for d in config_differences(first.metrics, second.metrics)
    }
    assert changes["code and libraries"] == (first.metrics["code"], "f" * 12)
    assert first.metrics["code"] != "f" * 12
