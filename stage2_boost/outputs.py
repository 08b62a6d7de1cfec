"""Write stage 2's user-facing files: predictions, submission, metrics, and the run log."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stage1_embed.common import atomic_path, atomic_write_text

from .errors import OutputError

RUNS_FILE = "runs.csv"
RUN_COLUMNS = ("time", "run_id", "feature_groups", "backbones", "trials", "oof_auc", "ci_low",
               "ci_high", "tuning_auc", "n_train", "n_pos", "n_extra", "seconds", "pauc80",
               "vs_previous", "vs_best", "images")  # fmt: skip


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_submission(test_pred: pd.DataFrame, path: Path) -> None:
    """Kaggle ``image_name,target`` with the calibrated probability (it ranks as the blend does);
    refuses anything that would not score."""
    submission = test_pred[["image_name", "probability"]].rename(columns={"probability": "target"})
    values = submission["target"].to_numpy()
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise OutputError("Submission values must be finite and within [0, 1]; this is a bug.")
    if submission["image_name"].duplicated().any():
        raise OutputError("Submission has duplicate image_name rows; this is a bug.")
    with atomic_path(path) as tmp:
        submission.to_csv(tmp, index=False, float_format="%.6f")


def write_metrics(metrics: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(json_ready(metrics), indent=2, sort_keys=False))


def append_run(row: dict[str, Any], path: Path) -> None:
    """Append one row to the run log (rewritten atomically, so it is never torn)."""
    new = pd.DataFrame([{c: row.get(c) for c in RUN_COLUMNS}])
    log = read_runs(path)
    log = pd.concat([log, new], ignore_index=True) if len(log) else new
    with atomic_path(path) as tmp:
        log.to_csv(tmp, index=False)


def read_runs(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    return pd.read_csv(path)


def json_ready(value: Any) -> Any:
    """JSON-safe and short: NaN and infinity become null, floats keep 6 decimals."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value
