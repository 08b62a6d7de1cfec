"""``python -m stage2_boost runs``: the run log as a table, newest first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import OutputError
from .outputs import RUNS_FILE, read_runs


def format_runs(log: pd.DataFrame) -> str:
    if log.empty:
        return "no runs yet"
    table = log.iloc[::-1].copy()
    table["oof_auc ± CI"] = [
        f"{a:.4f} [{lo:.4f}, {hi:.4f}]"
        for a, lo, hi in zip(table["oof_auc"], table["ci_low"], table["ci_high"], strict=True)
    ]
    columns = [
        "time",
        "run_id",
        "feature_groups",
        "backbones",
        "trials",
        "oof_auc ± CI",
        "tuning_auc",
        "n_extra",
        "seconds",
    ]
    if "n_extra" not in table.columns:  # a log written before extra data existed
        table["n_extra"] = 0
    table["n_extra"] = table["n_extra"].fillna(0).astype(int)
    return table[columns].to_string(index=False)


def print_runs(out: Path) -> int:
    path = Path(out) / RUNS_FILE
    if not path.is_file():
        raise OutputError(
            f"No run log at {path}: run `python -m stage2_boost train` first, or pass --out."
        )
    print(format_runs(read_runs(path)))
    return 0
