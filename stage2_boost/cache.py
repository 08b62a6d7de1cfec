"""One content-addressed cache for stage 2: fold features, evaluation refits, report figures.

The words: a *digest* is a sha256 of content (``data_digest``, ``update_digest``); a *key*
names a cache entry (``content_key``, a fold's ``cache_key``). An entry is a folder ``OUT/stage2/cache/<kind>/<key>/`` whose key is a digest of the inputs the
computation actually used: the data it read (every value of the row table, the embedding and
expert arrays, labels and fold assignment), its parameters, the source code of both packages
(a superset of what stage 2 imports, found by walking the folders, not listed by hand) and the
versions of the libraries the project depends on (read from its installed metadata).
Nothing about an entry is trusted but its key: a rerun on changed data, code or libraries gets a
new key and computes afresh; an unreadable entry is removed and recomputed.

Entries are written through ``common.atomic_folder`` (a reader never sees half an entry); a hit
refreshes the entry's age, and only the ``keep`` most recently used entries of a kind are kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import joblib
import numpy as np
import pandas as pd

from stage1_embed.common import atomic_folder, code_digest, library_versions, project_dependencies

from .boosters import BoosterAdapter
from .cv import CVResult, FoldMatrices, cross_validate
from .errors import ModelError
from .features import FeatureGroup
from .model.load import read_group_state
from .model.save import write_group_state

logger = logging.getLogger(__name__)
CACHE_DIR = "cache"
T = TypeVar("T")


class ContentCache:
    """Folders of computed results under ``root`` (None: caching off), keyed by content."""

    def __init__(self, root: Path | None, keep: int = 16) -> None:
        self.root, self.keep = root, keep

    def get_or_compute(
        self, kind: str, key: str | None, compute: Callable[[], T],
        write: Callable[[T, Path], None], read: Callable[[Path], T],
        keep: Callable[[T], bool] = lambda value: True,
    ) -> T:  # fmt: skip
        """``read`` the entry of ``key`` if there is one, else ``compute``, ``write`` (unless
        ``keep`` says the value is a failure, to be tried again next time) and prune."""
        if self.root is None or key is None:
            return compute()
        entry = self.root / kind / key[:32]
        if entry.is_dir():
            try:
                _check_sizes(entry)
                value = read(entry)
                os.utime(entry)  # recently used: kept by the pruning
                logger.info("%s reused from %s (same inputs, code and libraries)", kind, entry)
                return value
            except Exception as err:  # any damage (a truncated .npz raises BadZipFile, a
                # damaged booster LightGBMError): an entry is only a shortcut, so recompute
                logger.warning("cache entry %s is unreadable (%s: %s); recomputing it", entry,
                               type(err).__name__, err)  # fmt: skip
                shutil.rmtree(entry, ignore_errors=True)
        value = compute()
        if not keep(value):
            return value
        with atomic_folder(entry, replace=False) as staging:
            write(value, staging)
            sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
            (staging / _SIZES).write_text(json.dumps(sizes))
        self._prune(self.root / kind)
        return value

    def _prune(self, folder: Path) -> None:
        entries = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
        for old in entries[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)


_SIZES = ".sizes.json"  # each file of an entry with its size when written: a cut file is seen


def _check_sizes(entry: Path) -> None:
    """Refuse an entry whose files are missing or were cut short since it was written."""
    for name, size in json.loads((entry / _SIZES).read_text()).items():
        if (entry / name).stat().st_size != size:
            raise ValueError(f"{name} has changed size since it was written")


def content_key(*parts: Any) -> str:
    """sha256 over ``parts`` (frames by value and dtype, arrays by bytes, the rest as JSON), the
    project's code and its libraries' versions."""
    digest = hashlib.sha256()
    digest.update(environment_digest().encode())
    for part in parts:
        update_digest(digest, part)
    return digest.hexdigest()


def data_digest(*parts: Any) -> str:
    """sha256 over ``parts`` alone (no code, no versions): what identifies the data."""
    digest = hashlib.sha256()
    for part in parts:
        update_digest(digest, part)
    return digest.hexdigest()


def update_digest(digest: Any, part: Any) -> None:
    """Feed one value to ``digest``; every value of a frame or array counts."""
    if isinstance(part, pd.DataFrame):
        digest.update(json.dumps([[str(c), str(t)] for c, t in part.dtypes.items()]).encode())
        digest.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
    elif isinstance(part, np.ndarray):
        digest.update(f"{part.dtype}{part.shape}".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, dict) and any(
        isinstance(v, np.ndarray | pd.DataFrame) for v in part.values()
    ):
        for name in sorted(part):
            digest.update(str(name).encode())
            update_digest(digest, part[name])
    else:
        try:  # plain values as JSON: key order counts (a figure's plot order)
            text = json.dumps(part, default=_plain)
        except TypeError:  # a Series, a frame in a list, any other object: joblib, by value
            text = joblib.hash(part)
        digest.update(text.encode())


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths; anything else is hashed by value, never by ``str()``
    (which numpy and pandas shorten: a changed middle value would keep its key)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


@functools.cache
def environment_digest() -> str:
    """The code and libraries a stage 2 result depends on, computed once per process: the
    source of both packages (every module a stage 2 computation can import is in them) and the
    versions of the project's dependencies and Python (common.code_digest, common.dependencies)."""
    versions = library_versions(project_dependencies()) | {"python": sys.version}
    return hashlib.sha256(
        json.dumps([code_digest("stage1_embed", "stage2_boost"), versions]).encode()
    ).hexdigest()


# --- the kinds of entry --------------------------------------------------------------------------

_MATRICES = ("X_fit", "X_stop", "X_valid", "X_test")
_ROWS = ("fit_rows", "stop_rows", "valid_rows")


def cached_folds(
    cache: ContentCache, key: str, compute: Callable[[], list[FoldMatrices]],
    make_groups: Callable[[], list[FeatureGroup]], target: np.ndarray,
) -> list[FoldMatrices]:  # fmt: skip
    """A fold split's feature matrices and fitted groups; each fold remembers ``key`` so the
    refits computed from it can be keyed by it (None when caching is off)."""

    def read(entry: Path) -> list[FoldMatrices]:
        return _read_folds(entry, make_groups, target)

    folds = cache.get_or_compute("folds", key, compute, _write_folds, read)
    for fold in folds:
        fold.cache_key = key if cache.root is not None else None
    return folds


def cached_refit(
    cache: ContentCache, adapter: BoosterAdapter, folds: Sequence[FoldMatrices],
    params: dict[str, Any], n_rounds: int,
) -> CVResult:  # fmt: skip
    """``cross_validate`` with fixed rounds and the fold models kept, read back when the same
    fold matrices, model, parameters, rounds, seed, threads and device were refitted before."""
    fold_key = folds[0].cache_key if folds else None
    key = None if fold_key is None else content_key(
        "refit", fold_key, adapter.name, params, n_rounds, adapter.seed, adapter.threads,
        adapter.device,
    )  # fmt: skip

    def compute() -> CVResult:
        return cross_validate(adapter, folds, params, n_rounds=n_rounds, keep_models=True)

    def write(result: CVResult, folder: Path) -> None:
        arrays: dict[str, Any] = {"oof": result.oof}
        if result.test_pred is not None:
            arrays["test_pred"] = result.test_pred
        np.savez(folder / "predictions.npz", **arrays)
        for k, fitted in enumerate(result.models):
            adapter.save(fitted, folder / f"fold{k}{adapter.model_suffix}")
        meta = {"fold_aucs": result.fold_aucs, "best_iterations": result.best_iterations,
                "importance": result.importance, "n_models": len(result.models)}  # fmt: skip
        (folder / "refit.json").write_text(json.dumps(meta))

    def read(folder: Path) -> CVResult:
        meta = json.loads((folder / "refit.json").read_text())
        with np.load(folder / "predictions.npz", allow_pickle=False) as arrays:
            oof = arrays["oof"]
            test_pred = arrays["test_pred"] if "test_pred" in arrays.files else None
        models = [adapter.load(folder / f"fold{k}{adapter.model_suffix}")
                  for k in range(meta["n_models"])]  # fmt: skip
        return CVResult(oof, meta["fold_aucs"], meta["best_iterations"], test_pred,
                        meta["importance"], models)  # fmt: skip

    return cache.get_or_compute(f"refits-{adapter.name}", key, compute, write, read)


def cached_png(cache: ContentCache, key: str, draw: Callable[[], bytes]) -> bytes:
    """A figure's PNG bytes, drawn only when no figure was drawn from the same ``key``."""

    def write(png: bytes, folder: Path) -> None:
        (folder / "figure.png").write_bytes(png)

    def read(folder: Path) -> bytes:
        png = (folder / "figure.png").read_bytes()
        if not (png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")):
            raise ValueError("figure.png is not a whole PNG")  # nothing else parses it here
        return png

    return cache.get_or_compute("figures", key, draw, write, read)


def _write_folds(matrices: list[FoldMatrices], folder: Path) -> None:
    folds = []
    for fold in matrices:
        for name in _MATRICES:
            frame = getattr(fold, name)
            if frame is not None:
                frame.to_parquet(folder / f"fold{fold.fold}.{name}.parquet", index=False)
        np.savez(folder / f"fold{fold.fold}.rows.npz", **{n: getattr(fold, n) for n in _ROWS})
        state = write_group_state(fold.groups, folder / f"fold{fold.fold}.state.safetensors")
        folds.append({"fold": fold.fold, "state": state})
    (folder / "entry.json").write_text(json.dumps({"folds": folds}))


def _read_folds(
    folder: Path, make_groups: Callable[[], list[FeatureGroup]], target: np.ndarray
) -> list[FoldMatrices]:
    out = []
    for item in json.loads((folder / "entry.json").read_text())["folds"]:
        k = item["fold"]
        frames = {n: _parquet(folder / f"fold{k}.{n}.parquet") for n in _MATRICES}
        with np.load(folder / f"fold{k}.rows.npz", allow_pickle=False) as rows:
            fit, stop, valid = (rows[n] for n in _ROWS)
        try:
            groups = read_group_state(
                make_groups(), item["state"], folder / f"fold{k}.state.safetensors"
            )
        except ModelError as err:
            raise ValueError(str(err)) from err
        X_fit, X_stop, X_valid = frames["X_fit"], frames["X_stop"], frames["X_valid"]
        if X_fit is None or X_stop is None or X_valid is None:
            raise ValueError(f"fold {k}'s matrices are incomplete")
        out.append(FoldMatrices(k, fit, stop, valid, X_fit, X_stop, X_valid, frames["X_test"],
                                target[fit], target[stop], target[valid], groups=groups))  # fmt: skip
    return out


def _parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None
