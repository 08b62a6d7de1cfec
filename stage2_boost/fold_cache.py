"""Cache of the fitted per-fold feature matrices, so a stage 2 rerun spends its time in trials.

Building the folds' features (PCA and probes fitted per fold, for two fold splits) is most of a
short rerun's time. The matrices and the groups' fitted state are written once per fold split to
``OUT/stage2/fold_cache/<key>/`` and reused while the key is the same. The key covers everything
they depend on: the rows (split, image, source) and labels, the stage 1 input fingerprints and
embedding settings hashes, the feature groups, backbones, reduction, components, the fold
assignment and seed, the extra rows, the library versions, and the source code of the feature
and fold modules (so a code change invalidates it too). Writes are atomic (a folder renamed into
place); an unreadable entry is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stage1_embed.common import library_versions

from .cv import FoldMatrices, prepare_folds
from .data import StageData
from .errors import ModelError
from .features import FeatureGroup
from .model.load import read_group_state
from .model.save import write_group_state

logger = logging.getLogger(__name__)
CACHE_DIR = "fold_cache"
KEEP = 8  # newest entries kept; older ones are removed
_LIBRARIES = ("numpy", "pandas", "scikit-learn", "pyarrow")
_CODE = ("features", "cv.py", "fold_cache.py", "data.py")
_MATRICES = ("X_fit", "X_stop", "X_valid", "X_test")
_ROWS = ("fit_rows", "stop_rows", "valid_rows")


def fold_cache_key(
    data: StageData, parts: dict[str, Any], folds: np.ndarray, extra_rows: np.ndarray
) -> str:
    """sha256 over everything the fold matrices depend on."""
    digest = hashlib.sha256()
    rows = data.frame[["split", "image_name", "source"]].astype(str).agg("\t".join, axis=1)
    digest.update("\n".join(rows).encode())
    digest.update(data.target.tobytes())
    digest.update(np.asarray(folds, np.int64).tobytes())
    digest.update(np.asarray(extra_rows, np.int64).tobytes())
    provenance = {
        "manifest": data.provenance.get("input_fingerprint"),
        "embeddings": {s: p.get("settings_hash") for s, p in sorted(data.embedding_provenance.items())},
        "libraries": library_versions(_LIBRARIES),
        "code": _code_digest(),
        **parts,
    }  # fmt: skip
    digest.update(json.dumps(provenance, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cached_prepare_folds(
    cache_root: Path | None, key_parts: dict[str, Any], data: StageData, train_rows: np.ndarray,
    folds: np.ndarray, make_groups: Callable[[], list[FeatureGroup]], seed: int,
    test_rows: np.ndarray | None = None, extra_rows: np.ndarray | None = None,
) -> list[FoldMatrices]:  # fmt: skip
    """``prepare_folds``, read from the cache when its key matches (``cache_root`` None: off)."""
    extra = extra_rows if extra_rows is not None else np.zeros(0, np.int64)
    if cache_root is None:
        return prepare_folds(data, train_rows, folds, make_groups, seed, test_rows, extra_rows)
    parts = {**key_parts, "seed": seed, "test": test_rows is not None and len(test_rows) > 0}
    key = fold_cache_key(data, parts, folds, extra)
    entry = cache_root / key[:32]
    if (entry / "entry.json").is_file():
        try:
            loaded = _read(entry, make_groups, data.target)
            logger.info("fold features reused from %s", entry)
            return _tag(loaded, entry)
        except (OSError, ValueError, KeyError, ModelError) as err:
            logger.warning("fold cache entry %s is unreadable (%s); rebuilding it", entry, err)
            shutil.rmtree(entry, ignore_errors=True)
    matrices = prepare_folds(data, train_rows, folds, make_groups, seed, test_rows, extra_rows)
    _write(entry, matrices)
    prune_oldest(cache_root)
    return _tag(matrices, entry) if (entry / "entry.json").is_file() else matrices


def _tag(matrices: list[FoldMatrices], entry: Path) -> list[FoldMatrices]:
    """Remember the entry, so results computed from these matrices can be cached beside them."""
    for fold in matrices:
        fold.cache_entry = entry
    return matrices


def _write(entry: Path, matrices: list[FoldMatrices]) -> None:
    staging = entry.parent / f".{entry.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        folds = []
        for fold in matrices:
            for name in _MATRICES:
                frame = getattr(fold, name)
                if frame is not None:
                    frame.to_parquet(staging / f"fold{fold.fold}.{name}.parquet", index=False)
            np.savez(staging / f"fold{fold.fold}.rows.npz",
                     **{n: getattr(fold, n) for n in _ROWS})  # fmt: skip
            state = write_group_state(fold.groups, staging / f"fold{fold.fold}.state.safetensors")
            folds.append({"fold": fold.fold, "state": state, "test": fold.X_test is not None})
        (staging / "entry.json").write_text(json.dumps({"folds": folds}))
        with contextlib.suppress(OSError):  # another run wrote the same entry first: as good
            staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read(
    entry: Path, make_groups: Callable[[], list[FeatureGroup]], target: np.ndarray
) -> list[FoldMatrices]:
    meta = json.loads((entry / "entry.json").read_text())
    out = []
    for item in meta["folds"]:
        k = item["fold"]
        frames = {n: _parquet(entry / f"fold{k}.{n}.parquet") for n in _MATRICES}
        with np.load(entry / f"fold{k}.rows.npz", allow_pickle=False) as rows:
            fit, stop, valid = (rows[n] for n in _ROWS)
        groups = read_group_state(
            make_groups(), item["state"], entry / f"fold{k}.state.safetensors"
        )
        X_fit, X_stop, X_valid = frames["X_fit"], frames["X_stop"], frames["X_valid"]
        assert X_fit is not None and X_stop is not None and X_valid is not None
        out.append(FoldMatrices(k, fit, stop, valid, X_fit, X_stop, X_valid, frames["X_test"],
                                target[fit], target[stop], target[valid], groups=groups))  # fmt: skip
    return out


def _parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def prune_oldest(root: Path, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` most recently written (or used) entries under ``root``."""
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _code_digest() -> str:
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _CODE:
        path = package / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()
