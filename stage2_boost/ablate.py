"""``python -m stage2_boost ablate [RUN]``: what each feature group of a finished run is worth,
added to that run (its ``runs/<id>/metrics.json``, and ``metrics.json`` and the report when it is
the newest run). No new run is recorded and no model is replaced: the run's own chosen
parameters and rounds are refitted without each group on its own evaluation folds."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from stage1_embed.schema import MANIFEST_FILE

from .cache import cached_refit
from .config import Stage2Config
from .cv import oof_rows
from .errors import OutputError
from .evidence import METRICS_FILE, Evidence, read_evidence, resolve_run, run_folder
from .model.calibration import Platt, blend_logit
from .model.save import MODEL_DIR
from .outputs import write_metrics
from .train import PreparedRun, _adapter, ablate, prepare_run

logger = logging.getLogger(__name__)


def ablate_run(stage2: Path, reference: str | None = None) -> dict[str, Any]:
    """Ablate run ``reference`` (default: the newest) in ``stage2`` and record the table there;
    returns the run's metrics with its ``ablation``."""
    stage2 = Path(stage2)
    run_id = resolve_run(stage2, reference or "latest")
    lock = FileLock(str(stage2 / ".stage2.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise OutputError(f"Another stage 2 run is writing to {stage2}: wait for it.") from err
    try:
        return _ablate_locked(stage2, read_evidence(stage2, run_id))
    finally:
        lock.release()


def _ablate_locked(stage2: Path, evidence: Evidence) -> dict[str, Any]:
    metrics = evidence.metrics
    config = replace(_recorded_config(metrics, stage2), ablate=True)
    run = prepare_run(config, stage2)
    evaluation = run.evaluation(test=False)
    _check_same_images(evidence, run, oof_rows(evaluation))
    models = _chosen_models(stage2, evidence.run_id)
    refits = [cached_refit(run.cache, _adapter(config, name, evaluation), evaluation, params,
                           n_rounds) for name, params, n_rounds in models]  # fmt: skip
    full = blend_logit(*[r.oof for r in refits])
    metrics["ablation"] = ablate(run, models, full, evaluation, metrics["oof_auc_ci95"])
    write_metrics(metrics, run_folder(stage2, evidence.run_id) / METRICS_FILE)
    newest = stage2 / METRICS_FILE
    if newest.is_file() and json.loads(newest.read_text()).get("run_id") == evidence.run_id:
        write_metrics(metrics, newest)
        if config.report:
            _rewrite_report(stage2, metrics, run, [(n, r.models) for (n, _, _), r in
                                                   zip(models, refits, strict=True)], evaluation)  # fmt: skip
    return metrics


def _chosen_models(stage2: Path, run_id: str) -> list[tuple[str, dict[str, Any], int]]:
    """Each model's name, parameters and rounds at full precision, from the run's saved model
    (metrics.json keeps 6 decimals, which would refit slightly different models)."""
    from .model.load import read_manifest

    manifest = read_manifest(run_folder(stage2, run_id) / MODEL_DIR)
    return [(m["name"], m["params"], int(m["n_rounds"])) for m in manifest["models"]]


def _recorded_config(metrics: dict[str, Any], stage2: Path) -> Stage2Config:
    """The run's config; its features folder found again when the run was started elsewhere
    (a relative path) and the stage 2 folder sits inside it, as it does by default."""
    config = Stage2Config.from_json(metrics["config"])
    features = Path(config.features_dir)
    if not (features / MANIFEST_FILE).is_file() and (stage2.parent / MANIFEST_FILE).is_file():
        features = stage2.parent
    return replace(config, features_dir=features, out_dir=stage2)


def _check_same_images(evidence: Evidence, run: PreparedRun, rows: np.ndarray) -> None:
    """The refits must score exactly the images the run scored, with the same labels."""
    names = run.data.frame["image_name"].to_numpy()[rows]
    same = (
        len(names) == len(evidence.oof) and (names == evidence.oof["image_name"].to_numpy()).all()
    )
    if not same or not (run.data.target[rows] == evidence.oof["target"].to_numpy()).all():
        raise OutputError(
            f"The stage 1 outputs in {run.config.features_dir} changed since run "
            f"{evidence.run_id} (other images or labels): its ablation would describe another "
            "model. Train a new run with --ablate instead (./run_all.sh --stage 2 --ablate)."
        )


def _rewrite_report(
    stage2: Path, metrics: dict[str, Any], run: PreparedRun, models: list[tuple[str, list[Any]]],
    evaluation: list,
) -> None:  # fmt: skip
    from .galleries import report_galleries
    from .report import write_report

    oof = pd.read_parquet(stage2 / "oof.parquet")
    importance = pd.read_parquet(stage2 / "importance.parquet")
    calibration = metrics["calibration"]
    platt = Platt(calibration["slope"], calibration["intercept"])
    galleries = report_galleries(oof, run.data, models, evaluation, run.config.features_dir,
                                 run.cache, platt)  # fmt: skip
    write_report(stage2, metrics, oof, importance, run.data, run.cache, galleries)
