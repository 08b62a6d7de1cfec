"""Per-fold feature matrices (built once) and cross-validation of one parameter set."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from .boosters import BoosterAdapter, Fitted
from .data import StageData
from .features import FeatureGroup, build_features

GroupFactory = Callable[[], list[FeatureGroup]]
INNER_SPLITS = 5  # the early-stopping part is one fifth of the training part's patients


@dataclass
class FoldMatrices:
    """One outer fold: its rows (positions in ``StageData.frame``) and feature matrices."""

    fold: int
    fit_rows: np.ndarray
    stop_rows: np.ndarray
    valid_rows: np.ndarray
    X_fit: pd.DataFrame
    X_stop: pd.DataFrame
    X_valid: pd.DataFrame
    X_test: pd.DataFrame | None
    y_fit: np.ndarray
    y_stop: np.ndarray
    y_valid: np.ndarray
    prepared: dict[tuple[str, bool, int], Any] = field(
        default_factory=dict
    )  # (adapter, whole, bins) -> native data
    groups: list[FeatureGroup] = field(default_factory=list)  # fitted on this fold's training part
    # the cache key these matrices were stored under (None: not cached); refits are keyed by it
    cache_key: str | None = None

    def native(self, adapter: BoosterAdapter, whole: bool = False) -> Any:
        """The adapter's data for this fold, built on first use and kept: fit + early-stopping
        parts at the adapter's search resolution (tuning), or (``whole``) the fold's entire
        training part at full resolution for the fixed-round refits that are reported."""
        bins = adapter.full_bins if whole else adapter.search_bins
        key = (adapter.name, whole, bins)
        if key not in self.prepared:
            if whole:
                X = pd.concat([self.X_fit, self.X_stop], ignore_index=True)
                self.prepared[key] = adapter.prepare(X, np.concatenate([self.y_fit, self.y_stop]))
            else:
                self.prepared[key] = adapter.prepare(
                    self.X_fit, self.y_fit, self.X_stop, self.y_stop, max_bin=bins
                )
        return self.prepared[key]


@dataclass
class CVResult:
    oof: np.ndarray  # aligned with the train rows passed to prepare_folds
    fold_aucs: list[float]
    best_iterations: list[int]
    test_pred: np.ndarray | None
    importance: dict[str, float] = field(default_factory=dict)  # mean gain over folds
    models: list[Fitted] = field(default_factory=list)  # per fold, when asked to keep them

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.fold_aucs))


def prepare_folds(
    data: StageData,
    train_rows: np.ndarray,
    folds: np.ndarray,
    make_groups: GroupFactory,
    seed: int,
    test_rows: np.ndarray | None = None,
    extra_rows: np.ndarray | None = None,
    workers: int = 1,
) -> list[FoldMatrices]:
    """Build every fold's matrices once; feature groups are fitted on the training part only.

    ``extra_rows`` (extra training sets) join the fit part of every fold: they never validate and
    never decide early stopping, which stays on the primary data's own patients. ``workers``
    folds are built side by side, BLAS and OpenMP on one thread each, for the reason the fits
    are (boosters.plan_threads; benchmarks/README.md, "Under load")."""
    from threadpoolctl import threadpool_limits

    def build(fold: int) -> FoldMatrices:
        return _fold_matrices(
            data, train_rows, folds, fold, make_groups, seed, test_rows, extra_rows
        )

    with threadpool_limits(limits=1), ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(build, range(int(folds.max()) + 1)))


def _fold_matrices(
    data: StageData, train_rows: np.ndarray, folds: np.ndarray, fold: int,
    make_groups: GroupFactory, seed: int, test_rows: np.ndarray | None,
    extra_rows: np.ndarray | None,
) -> FoldMatrices:  # fmt: skip
    target = data.target
    valid = train_rows[folds == fold]
    fit, stop = inner_split(data, train_rows[folds != fold], seed + fold)
    if extra_rows is not None and len(extra_rows):
        fit = np.concatenate([fit, extra_rows])
    row_sets = [fit, stop, valid] + (
        [test_rows] if test_rows is not None and len(test_rows) else []
    )
    groups = make_groups()
    matrices = build_features(groups, data, np.concatenate([fit, stop]), row_sets)
    X_test = matrices[3] if len(matrices) > 3 else None
    X_fit, X_stop, X_valid = matrices[:3]
    return FoldMatrices(fold, fit, stop, valid, X_fit, X_stop, X_valid, X_test,
                        target[fit], target[stop], target[valid], groups=groups)  # fmt: skip


def inner_split(data: StageData, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training part by patient into a fit part and an early-stopping part."""
    frame = data.frame.iloc[rows]
    splitter = StratifiedGroupKFold(n_splits=INNER_SPLITS, shuffle=True, random_state=seed)
    fit, stop = next(splitter.split(frame, frame["target"].astype(int), frame["patient_id"]))
    return rows[fit], rows[stop]


def cross_validate(
    adapter: BoosterAdapter,
    folds: Sequence[FoldMatrices],
    params: dict[str, Any],
    on_fold: Callable[[int, float], None] | None = None,
    n_rounds: int | None = None,
    keep_models: bool = False,
    on_round: Callable[[int, int, float], None] | None = None,
) -> CVResult:
    """Fit one model per fold; ``on_fold(fold, running mean AUC)`` may stop early (pruning), as
    may ``on_round(fold, rounds done, early-stopping AUC)`` inside an early-stopped fit.

    Without ``n_rounds`` each fold early-stops on its inner split (tuning). With it, every fold
    trains that many rounds on its whole training part, so the folds' models are alike and their
    pooled out-of-fold predictions comparable (the reported evaluation).

    ``adapter.workers`` folds are fitted at once (boosters.plan_threads); results are taken in
    fold order, so ``on_fold`` sees exactly what a one-at-a-time run would. When a fold stops
    the cross-validation, the fits still running stop at their next round."""
    stop = threading.Event()

    def fit(fold: FoldMatrices) -> tuple[Fitted, np.ndarray, np.ndarray | None]:
        report = None if on_round is None else functools.partial(on_round, fold.fold)
        native = fold.native(adapter, whole=n_rounds is not None)
        fitted = adapter.fit(native, params, n_rounds, report, stop)
        test = adapter.predict(fitted, fold.X_test) if fold.X_test is not None else None
        return fitted, adapter.predict(fitted, fold.X_valid), test

    n = sum(len(f.valid_rows) for f in folds)
    oof, aucs, iterations, tests = np.full(n, np.nan), [], [], []
    kept: list[Fitted] = []
    gains: dict[str, float] = {}
    offsets = np.cumsum([0] + [len(f.valid_rows) for f in folds])
    fits = _in_fold_order(fit, folds, max(1, min(adapter.workers, len(folds))), stop)
    try:
        for fold, start, (fitted, pred, test) in zip(folds, offsets[:-1], fits, strict=True):
            oof[start : start + len(pred)] = pred
            aucs.append(float(roc_auc_score(fold.y_valid, pred)))
            iterations.append(fitted.best_iteration)
            for name, gain in adapter.gain_importance(fitted).items():
                gains[name] = gains.get(name, 0.0) + gain / len(folds)
            if test is not None:
                tests.append(test)
            if keep_models:
                kept.append(fitted)
            if on_fold is not None:
                on_fold(fold.fold, float(np.mean(aucs)))
    finally:
        fits.close()
    test_pred = np.mean(tests, axis=0) if tests else None
    return CVResult(oof, aucs, iterations, test_pred, gains, kept)


_Fold = TypeVar("_Fold")
_Result = TypeVar("_Result")


def _in_fold_order(
    fit: Callable[[_Fold], _Result], folds: Sequence[_Fold], workers: int, stop: threading.Event
) -> Generator[_Result, None, None]:
    """Each fold's fit, in fold order; with several workers they run side by side, and when the
    caller stops early (done, pruned or failed) ``stop`` is set so running fits end at their next
    round."""
    if workers == 1:
        yield from map(fit, folds)
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fit, fold) for fold in folds]
        try:
            for future in futures:
                yield future.result()
        finally:
            stop.set()
            for future in futures:
                future.cancel()


def oof_rows(folds: Sequence[FoldMatrices]) -> np.ndarray:
    """Positions in ``StageData.frame`` of the OOF predictions, in ``cross_validate``'s order."""
    return np.concatenate([f.valid_rows for f in folds])


def oof_folds(folds: Sequence[FoldMatrices]) -> np.ndarray:
    """The fold number of each OOF prediction, in ``cross_validate``'s order."""
    return np.concatenate([np.full(len(f.valid_rows), f.fold) for f in folds])
