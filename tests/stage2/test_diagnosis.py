"""``train --target diagnosis``: the multi-class model, out of fold, with per-class metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage2_boost.cli import main
from stage2_boost.diagnosis import diagnosis_metrics
from tests.stage2.helpers import make_embeddings, synthetic_manifest, write_stage1


def test_the_diagnosis_model_reports_each_class_out_of_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = synthetic_manifest(n_patients=60)
    write_stage1(tmp_path, manifest, {"bb": make_embeddings(manifest)})
    assert main(["train", "--features", str(tmp_path), "--target", "diagnosis"]) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "melanoma" in printed
    result = json.loads((tmp_path / "stage2" / "diagnosis.json").read_text())
    assert set(result["classes"]) == {"melanoma", "nevus", "unknown"}
    oof = pd.read_parquet(tmp_path / "stage2" / "diagnosis_oof.parquet")
    assert len(oof) == (manifest["split"] == "train").sum()
    assert np.allclose(oof[["p_melanoma", "p_nevus", "p_unknown"]].sum(axis=1), 1)
    assert result["classes"]["melanoma"]["auc"] > 0.7  # the label shapes the embeddings
    write_stage1(tmp_path, manifest.assign(diagnosis="unknown"), {"bb": make_embeddings(manifest)})
    assert main(["train", "--features", str(tmp_path), "--target", "diagnosis"]) == 2
    assert "needs two or more diagnoses" in capsys.readouterr().err


def test_balanced_accuracy_is_the_mean_recall_over_classes() -> None:
    classes = np.array(["a"] * 8 + ["b"] * 2)
    probability = np.zeros((10, 2))
    probability[:, 0] = 1  # always "a": recall 1 for a, 0 for b
    result = diagnosis_metrics(classes, probability, ["a", "b"], np.arange(10).astype(str), 50, 0)
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    low, high = result["balanced_accuracy_ci95"]
    assert low <= 0.5 <= high
