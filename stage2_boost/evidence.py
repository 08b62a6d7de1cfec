"""Each run's evidence, kept under its id so any two runs can be compared later.

Layout (``OUT/stage2/runs/<run_id>/``):

    model/             the run's saved model (OUT/stage2/model is a copy of the newest run's)
    oof.parquet        out-of-fold predictions per model and of the blend, with image, patient,
                       evaluation fold and label (0.5-0.8 MB at the full 33,126 images)
    test_pred.parquet  the test predictions, when the data have a test split
    metrics.json       the run's metrics; written last, so its presence marks a complete folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stage1_embed.common import json_digest

from .errors import OutputError
from .outputs import RUNS_FILE, read_runs, write_metrics, write_parquet

RUNS_DIR = "runs"
OOF_FILE = "oof.parquet"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Evidence:
    run_id: str
    oof: pd.DataFrame  # image_name, patient_id, fold, target, <model>..., blend, probability
    metrics: dict[str, Any]

    @property
    def models(self) -> list[str]:
        return [*self.metrics["models"], "blend"]


def images_digest(oof: pd.DataFrame) -> str:
    """A run's scored images and their labels, as 16 hex digits: runs with the same digest can
    be paired image by image (the run log keeps it, so finding them reads no predictions)."""
    pairs = sorted(zip(oof["image_name"].astype(str), oof["target"].astype(int), strict=True))
    return json_digest(pairs)[:16]


def run_folder(stage2: Path, run_id: str) -> Path:
    return Path(stage2) / RUNS_DIR / run_id


def write_evidence(
    stage2: Path, run_id: str, oof: pd.DataFrame, test_pred: pd.DataFrame | None,
    metrics: dict[str, Any],
) -> Path:  # fmt: skip
    folder = run_folder(stage2, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(oof, folder / OOF_FILE)
    if test_pred is not None:
        write_parquet(test_pred, folder / "test_pred.parquet")
    write_metrics(metrics, folder / METRICS_FILE)
    return folder


def has_evidence(stage2: Path, run_id: str) -> bool:
    folder = run_folder(stage2, run_id)
    return (folder / METRICS_FILE).is_file() and (folder / OOF_FILE).is_file()


def read_evidence(stage2: Path, run_id: str) -> Evidence:
    folder = run_folder(stage2, run_id)
    if not has_evidence(stage2, run_id):
        raise OutputError(
            f"Run {run_id} kept no evidence in {folder} (a run from before evidence was kept, or "
            "one that did not finish): it cannot be compared. `python -m stage2_boost runs` "
            "says which runs can."
        )
    metrics = json.loads((folder / METRICS_FILE).read_text())
    return Evidence(run_id, pd.read_parquet(folder / OOF_FILE), metrics)


def runs_with_evidence(stage2: Path) -> list[str]:
    """Run ids of the run log that kept evidence, oldest first."""
    log = read_runs(Path(stage2) / RUNS_FILE)
    return [r for r in log["run_id"].astype(str) if has_evidence(stage2, r)]


def resolve_run(stage2: Path, reference: str, exclude: str | None = None) -> str:
    """A run id from a full id, a unique prefix or suffix (the random tail: ``3f9c2a``),
    ``latest`` or ``best`` (highest blend OOF AUC), among the runs that kept evidence other than
    ``exclude``."""
    ids = [r for r in runs_with_evidence(stage2) if r != exclude]
    if not ids:
        raise OutputError(
            f"No run in {stage2} kept evidence to compare: train a run first "
            "(./run_all.sh --stage 2, or python -m stage2_boost train)."
        )
    if reference == "latest":
        return ids[-1]
    if reference == "best":
        log = read_runs(Path(stage2) / RUNS_FILE)
        log = log[log["run_id"].astype(str).isin(ids)]
        return str(log.loc[log["oof_auc"].idxmax(), "run_id"])
    matches = [r for r in ids if r.startswith(reference) or r.endswith(reference)]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(ids[-5:])
    what = "matches several runs" if matches else "matches no run with evidence"
    raise OutputError(
        f"Run {reference!r} {what} in {stage2}. Give more of a run id (its start or its end), or latest / "
        f"best (newest runs with evidence: {shown})."
    )
