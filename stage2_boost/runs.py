"""``python -m stage2_boost runs``: the run log as a table, newest first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .chance import chance_text
from .errors import OutputError
from .evidence import has_evidence
from .outputs import RUNS_FILE, read_runs


def format_runs(log: pd.DataFrame, stage2: Path | None = None) -> str:
    """The log newest first: OOF AUC with its own interval, pAUC80, and the paired ΔAUC against
    the previous and the best earlier run on the same images (computed when the run ended)."""
    if log.empty:
        return "no runs yet"
    table = log.iloc[::-1].copy()
    for column in ("n_extra", "pauc80", "vs_previous", "vs_best"):  # logs from older releases
        if column not in table.columns:
            table[column] = None
    table["oof_auc ± CI"] = [
        f"{a:.4f} [{lo:.4f}, {hi:.4f}]{' chance' if chance_text((lo, hi)) else ''}"
        for a, lo, hi in zip(table["oof_auc"], table["ci_low"], table["ci_high"], strict=True)
    ]
    table["tuning_auc"] = [f"{v:.4f}" if pd.notna(v) else "untuned" for v in table["tuning_auc"]]
    table["pAUC80"] = [f"{v:.4f}" if pd.notna(v) else "-" for v in table["pauc80"]]
    table["n_extra"] = pd.to_numeric(table["n_extra"], errors="coerce").fillna(0).astype(int)
    table["Δ previous"] = table["vs_previous"].fillna("-")
    table["Δ best"] = table["vs_best"].fillna("-")
    columns = ["time", "run_id", "feature_groups", "backbones", "trials", "oof_auc ± CI", "pAUC80",
               "Δ previous", "Δ best", "tuning_auc", "n_extra", "seconds"]  # fmt: skip
    if stage2 is not None:
        table["compare"] = [
            "yes" if has_evidence(stage2, str(r)) else "no" for r in table["run_id"]
        ]
        columns.append("compare")
    return table[columns].to_string(index=False)


def print_runs(out: Path) -> int:
    path = Path(out) / RUNS_FILE
    if not path.is_file():
        raise OutputError(
            f"No run log at {path}: run `python -m stage2_boost train` first, or pass --out."
        )
    print(format_runs(read_runs(path), Path(out)))
    print("chance: the AUC interval contains 0.5, no evidence the run ranks lesions better than "
          "chance; Δ: paired ΔAUC of the blend [95% CI, patient bootstrap] against the previous "
          "and the best earlier run on the same images; untuned: the run's models kept their "
          "starting parameters (no trial); compare: whether the run kept the evidence "
          "`python -m stage2_boost compare` needs")  # fmt: skip
    return 0
