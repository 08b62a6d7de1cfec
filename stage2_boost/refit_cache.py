"""Cache of the evaluation refits, so a rerun whose studies chose the same parameters refits nothing.

The reported evaluation refits each model on every fold with the chosen parameters and a fixed
number of rounds: a deterministic function of the fold matrices, the model, its parameters, the
rounds, the seed, the threads and device, the boosting library's version and this code. When all
of those match a finished refit, its out-of-fold and test predictions, fold AUCs, importances and
native fold models are read back instead (``OUT/stage2/fold_cache/<entry>/refits/<key>/``, beside
the fold matrices they came from, so they go when those go). Writes are atomic (a folder renamed
into place); an unreadable entry is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stage1_embed.common import library_versions

from .boosters import BoosterAdapter
from .cv import CVResult, FoldMatrices, cross_validate
from .fold_cache import prune_oldest

logger = logging.getLogger(__name__)
REFITS = "refits"
KEEP = 16  # newest refits kept per fold-cache entry
_LIBRARIES = ("lightgbm", "xgboost", "numpy", "scikit-learn")
_CODE = ("boosters.py", "cv.py", "refit_cache.py")


def cached_refit(
    adapter: BoosterAdapter, folds: Sequence[FoldMatrices], params: dict[str, Any], n_rounds: int
) -> CVResult:
    """``cross_validate`` with fixed rounds and the fold models kept, reused when cached.

    Folds that did not come from the fold cache (``--no-cache``) are always refitted."""
    entry = folds[0].cache_entry if folds else None
    if entry is None:
        return cross_validate(adapter, folds, params, n_rounds=n_rounds, keep_models=True)
    folder = entry / REFITS / refit_key(adapter, params, n_rounds)[:32]
    if (folder / "refit.json").is_file():
        try:
            result = _read(folder, adapter)
            os.utime(folder)  # recently used: kept by the pruning
            logger.info(
                "%s refit reused from %s (same parameters and rounds)", adapter.name, folder
            )
            return result
        except (OSError, ValueError, KeyError) as err:
            logger.warning("refit cache entry %s is unreadable (%s); refitting", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
    result = cross_validate(adapter, folds, params, n_rounds=n_rounds, keep_models=True)
    _write(folder, adapter, result)
    prune_oldest(entry / REFITS, KEEP)
    return result


def refit_key(adapter: BoosterAdapter, params: dict[str, Any], n_rounds: int) -> str:
    """sha256 over everything a refit depends on besides the fold matrices (keyed by the entry)."""
    package = Path(__file__).resolve().parent
    code = hashlib.sha256(b"".join((package / name).read_bytes() for name in _CODE)).hexdigest()
    parts = {
        "model": adapter.name, "params": params, "n_rounds": n_rounds, "seed": adapter.seed,
        "threads": adapter.threads, "device": adapter.device,
        "libraries": library_versions(_LIBRARIES), "code": code,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _write(folder: Path, adapter: BoosterAdapter, result: CVResult) -> None:
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        arrays: dict[str, Any] = {"oof": result.oof}
        if result.test_pred is not None:
            arrays["test_pred"] = result.test_pred
        np.savez(staging / "predictions.npz", **arrays)
        for k, fitted in enumerate(result.models):
            adapter.save(fitted, staging / f"fold{k}{adapter.model_suffix}")
        meta = {"fold_aucs": result.fold_aucs, "best_iterations": result.best_iterations,
                "importance": result.importance, "n_models": len(result.models)}  # fmt: skip
        (staging / "refit.json").write_text(json.dumps(meta))
        with contextlib.suppress(OSError):  # another run wrote the same refit first: as good
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read(folder: Path, adapter: BoosterAdapter) -> CVResult:
    meta = json.loads((folder / "refit.json").read_text())
    with np.load(folder / "predictions.npz", allow_pickle=False) as arrays:
        oof = arrays["oof"]
        test_pred = arrays["test_pred"] if "test_pred" in arrays.files else None
    models = [
        adapter.load(folder / f"fold{k}{adapter.model_suffix}") for k in range(meta["n_models"])
    ]
    return CVResult(oof, meta["fold_aucs"], meta["best_iterations"], test_pred,
                    meta["importance"], models)  # fmt: skip
