"""Scoring keeps every model's predictions (issue 29, item 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stage2_boost.config import Stage2Config
from stage2_boost.errors import OutputError
from stage2_boost.model.predict import run_predict
from stage2_boost.train import run_training
from tests.stage2.helpers import FAST


def test_a_second_model_never_replaces_the_first_ones_predictions(
    features: Path, tmp_path: Path
) -> None:
    first = run_training(Stage2Config(features_dir=features, out_dir=tmp_path / "a", **FAST))
    second = run_training(Stage2Config(features_dir=features, out_dir=tmp_path / "b", **FAST))
    out = tmp_path / "scored"
    run_predict(first.out_dir / "model", features, out)
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(pd.read_csv(out / "predictions.csv")["model_run"]) == {first.run_id}
    with pytest.raises(OutputError, match=f"--out {out}-{second.run_id}"):
        run_predict(second.out_dir / "model", features, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    run_predict(first.out_dir / "model", features, out)  # the same model may score again
    run_predict(second.out_dir / "model", features, Path(f"{out}-{second.run_id}"))
