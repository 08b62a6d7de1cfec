"""LightGBM and XGBoost behind one adapter: suggest parameters, prepare data once, fit, predict."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from stage1_embed.common import usable_cores

from .config import MODELS
from .errors import ConfigError

# A fit smaller than this (rows x features) always runs on one thread, whatever the cores: its
# parallel regions are too short to gain from more (benchmarks/README.md, "Under load").
SERIAL_CELLS = 2_000_000
FOLDS = 5  # the default fold count: how many fits a cross-validation can run at once
REPORT_EVERY = 10  # rounds between two reports of the early-stopping AUC to ``on_round``
RoundCallback = Callable[[int, float], None]  # (rounds done, AUC on the early-stopping part)


def plan_threads(
    cores: int, n_rows: int, n_features: int | None, n_folds: int, device: str
) -> tuple[int, int]:
    """(folds fitted at once, OpenMP threads per fit) for ``cores`` threads in all.

    The cores go to whole fits first: the folds of a cross-validation are independent, so they
    run side by side, each fit on its own thread. A fit on several OpenMP threads waits at every
    one of its many short parallel regions for all of them; when another process holds a core,
    one of them is not running and the whole fit crawls (a full-scale trial beside one busy
    process: 0.9 s -> 212 s with 2 threads per fit; 0.8 s -> 1.3 s with 2 single-thread folds at
    once). Only the cores left over by the folds give a large fit more threads. Results do not
    depend on how many fits run at once, only on the threads per fit (as in any OpenMP library)."""
    if not device.startswith("cpu"):
        return 1, cores  # one GPU: one fit at a time
    workers = max(1, min(cores, n_folds))
    small = n_features is not None and n_rows * n_features < SERIAL_CELLS
    return workers, 1 if small else max(1, cores // workers)


@dataclass
class Fitted:
    model: Any
    best_iteration: int


class BoosterAdapter(ABC):
    """One gradient-boosting library. Data handles are built once per fold and reused by trials."""

    name: str

    def __init__(
        self, seed: int = 0, max_rounds: int = 2000, early_stopping: int = 100,
        n_rows: int = 30_000, device: str = "cpu", threads: int | None = None,
        search_bins: int | None = None, n_features: int | None = None, n_folds: int = FOLDS,
    ) -> None:  # fmt: skip
        self.seed, self.max_rounds, self.early_stopping = seed, max_rounds, early_stopping
        # Histogram bins of the early-stopped fits that tuning runs (None: the library's full
        # resolution, which the reported refits always use).
        self.search_bins = search_bins or self.full_bins
        self.device = self.supported_device(device)
        self.workers, self.threads = plan_threads(
            threads or usable_cores(), n_rows, n_features, n_folds, self.device
        )
        # Leaf-size bounds scale with the data: 200-row leaves cannot exist in a 300-row demo.
        self.max_leaf_rows = int(np.clip(n_rows // 10, 5, 200))

    def supported_device(self, device: str) -> str:
        """The device this library trains on here ('cpu' unless it can use ``device``)."""
        return "cpu"

    @abstractmethod
    def suggest_params(self, trial: Any) -> dict[str, Any]:
        """Draw one parameter set from the search space (define-by-run)."""

    @abstractmethod
    def default_params(self) -> dict[str, Any]:
        """Sensible untuned parameters (used when a study has no finished trial)."""

    full_bins: ClassVar[int]  # the library's default histogram resolution

    @abstractmethod
    def prepare(
        self, X_fit: pd.DataFrame, y_fit: np.ndarray, X_stop: pd.DataFrame | None = None,
        y_stop: np.ndarray | None = None, max_bin: int | None = None,
    ) -> Any:  # fmt: skip
        """Library-native training data (and early-stopping data, if given), built once, with
        ``max_bin`` histogram bins (default ``full_bins``)."""

    @abstractmethod
    def fit(
        self, prepared: Any, params: dict[str, Any], n_rounds: int | None = None,
        on_round: RoundCallback | None = None, stop: threading.Event | None = None,
    ) -> Fitted:  # fmt: skip
        """Without ``n_rounds``: up to ``max_rounds``, stopping early on the stop part (never the
        reported fold); ``on_round`` gets the stop part's AUC every ``REPORT_EVERY`` rounds and
        may raise to end the fit (pruning). With ``n_rounds``: exactly that many rounds. Once
        ``stop`` is set, the fit raises ``Stopped`` at its next round (another fold was pruned)."""

    @abstractmethod
    def predict(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        """Probability of malignancy per row."""

    @abstractmethod
    def gain_importance(self, fitted: Fitted) -> dict[str, float]:
        """Total gain per feature name."""

    model_suffix: ClassVar[str]  # the library's own model format

    @abstractmethod
    def save(self, fitted: Fitted, path: Path) -> None:
        """Write the model in the library's own format (no pickle), its used rounds only."""

    @abstractmethod
    def load(self, path: Path) -> Fitted:
        """Read a model written by ``save``."""

    @abstractmethod
    def contributions(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        """TreeSHAP contributions in log-odds, one column per feature plus the bias (last)."""


class LightGBMAdapter(BoosterAdapter):
    name = "lgbm"
    full_bins = 255
    _dataset_params: ClassVar[dict[str, Any]] = {"feature_pre_filter": False, "verbose": -1}

    def suggest_params(self, trial: Any) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "min_child_samples": trial.suggest_int(
                "min_child_samples", 2, self.max_leaf_rows, log=True
            ),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.2, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
            "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 30.0, log=True),
        }

    def default_params(self) -> dict[str, Any]:
        return {"learning_rate": 0.05, "num_leaves": 15, "min_child_samples": min(20, self.max_leaf_rows), "feature_fraction": 0.8,
                "bagging_fraction": 0.8, "lambda_l2": 1.0, "scale_pos_weight": 1.0}  # fmt: skip

    def prepare(
        self, X_fit: pd.DataFrame, y_fit: np.ndarray, X_stop: pd.DataFrame | None = None,
        y_stop: np.ndarray | None = None, max_bin: int | None = None,
    ) -> Any:  # fmt: skip
        import lightgbm as lgb

        dataset_params = {**self._dataset_params, "max_bin": max_bin or self.full_bins}
        train = lgb.Dataset(X_fit, y_fit, params=dataset_params, free_raw_data=False).construct()
        if X_stop is None:
            return train, None, dataset_params
        stop = lgb.Dataset(
            X_stop, y_stop, reference=train, params=dataset_params, free_raw_data=False
        )
        return train, stop.construct(), dataset_params

    def fit(
        self, prepared: Any, params: dict[str, Any], n_rounds: int | None = None,
        on_round: RoundCallback | None = None, stop: threading.Event | None = None,
    ) -> Fitted:  # fmt: skip
        import lightgbm as lgb

        train, stopping, dataset_params = prepared
        full = {"objective": "binary", "metric": "auc", "verbosity": -1, "num_threads": self.threads,
                "seed": self.seed, "bagging_freq": 1, "deterministic": True, "force_row_wise": True,
                **dataset_params, **params}  # fmt: skip
        callbacks: list[Callable[..., Any]] = [] if stop is None else [_lightgbm_stopper(stop)]
        if n_rounds is not None:
            booster = lgb.train(full, train, num_boost_round=n_rounds, callbacks=callbacks)
            return Fitted(booster, n_rounds)
        callbacks.append(lgb.early_stopping(self.early_stopping, verbose=False))
        if on_round is not None:
            callbacks.append(_lightgbm_reporter(on_round))
        booster = lgb.train(
            full, train, num_boost_round=self.max_rounds, valid_sets=[stopping], callbacks=callbacks
        )
        return Fitted(booster, int(booster.best_iteration or booster.current_iteration()))

    def predict(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            fitted.model.predict(X, num_iteration=fitted.best_iteration), dtype=np.float64
        )

    def gain_importance(self, fitted: Fitted) -> dict[str, float]:
        gains = fitted.model.feature_importance("gain", iteration=fitted.best_iteration)
        return dict(zip(fitted.model.feature_name(), map(float, gains), strict=True))

    model_suffix = ".txt"

    def save(self, fitted: Fitted, path: Path) -> None:
        fitted.model.save_model(str(path), num_iteration=fitted.best_iteration)

    def load(self, path: Path) -> Fitted:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(path))
        return Fitted(booster, booster.current_iteration())

    def contributions(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            fitted.model.predict(X, num_iteration=fitted.best_iteration, pred_contrib=True)
        )


class XGBoostAdapter(BoosterAdapter):
    name = "xgb"
    full_bins = 256

    def supported_device(self, device: str) -> str:
        return device if device.startswith("cuda") and xgboost_has_cuda() else "cpu"

    def suggest_params(self, trial: Any) -> dict[str, Any]:
        return {
            "eta": trial.suggest_float("eta", 0.01, 0.2, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "min_child_weight": trial.suggest_float(
                "min_child_weight", 0.01, self.max_leaf_rows / 20, log=True
            ),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
            "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
            "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 30.0, log=True),
        }

    def default_params(self) -> dict[str, Any]:
        return {"eta": 0.05, "max_depth": 4, "min_child_weight": min(0.5, self.max_leaf_rows / 20), "subsample": 0.8,
                "colsample_bytree": 0.8, "lambda": 1.0, "scale_pos_weight": 1.0}  # fmt: skip

    def prepare(
        self, X_fit: pd.DataFrame, y_fit: np.ndarray, X_stop: pd.DataFrame | None = None,
        y_stop: np.ndarray | None = None, max_bin: int | None = None,
    ) -> Any:  # fmt: skip
        import xgboost as xgb

        bins = max_bin or self.full_bins
        train = xgb.QuantileDMatrix(X_fit, y_fit, enable_categorical=True, max_bin=bins)
        if X_stop is None:
            return train, None, bins
        stop = xgb.QuantileDMatrix(X_stop, y_stop, enable_categorical=True, ref=train, max_bin=bins)
        return train, stop, bins

    def fit(
        self, prepared: Any, params: dict[str, Any], n_rounds: int | None = None,
        on_round: RoundCallback | None = None, stop: threading.Event | None = None,
    ) -> Fitted:  # fmt: skip
        import xgboost as xgb

        train, stopping, bins = prepared
        full = {"objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist",
                "max_bin": bins, "nthread": self.threads, "seed": self.seed,
                "device": self.device, **params}  # fmt: skip
        callbacks = [] if stop is None else [_xgboost_stopper(stop)]
        if n_rounds is not None:
            booster = xgb.train(full, train, num_boost_round=n_rounds, callbacks=callbacks)
            return Fitted(booster, n_rounds)
        if on_round is not None:
            callbacks.append(_xgboost_reporter(on_round))
        booster = xgb.train(
            full, train, num_boost_round=self.max_rounds, evals=[(stopping, "stop")],
            early_stopping_rounds=self.early_stopping, verbose_eval=False, callbacks=callbacks,
        )  # fmt: skip
        return Fitted(booster, int(booster.best_iteration) + 1)

    def predict(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(X, enable_categorical=True, nthread=self.threads)
        return np.asarray(
            fitted.model.predict(matrix, iteration_range=(0, fitted.best_iteration)), np.float64
        )

    def gain_importance(self, fitted: Fitted) -> dict[str, float]:
        return {
            k: float(v) for k, v in fitted.model.get_score(importance_type="total_gain").items()
        }

    model_suffix = ".ubj"

    def save(self, fitted: Fitted, path: Path) -> None:
        fitted.model[: fitted.best_iteration].save_model(str(path))

    def load(self, path: Path) -> Fitted:
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(path))
        booster.set_param({"nthread": self.threads})
        return Fitted(booster, booster.num_boosted_rounds())

    def contributions(self, fitted: Fitted, X: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(X, enable_categorical=True, nthread=self.threads)
        return np.asarray(
            fitted.model.predict(
                matrix, iteration_range=(0, fitted.best_iteration), pred_contribs=True
            )
        )


class Stopped(Exception):
    """A fit ended early because its cross-validation stops (another fold was pruned)."""


def _lightgbm_stopper(stop: threading.Event) -> Callable[[Any], None]:
    def check(env: Any) -> None:
        if stop.is_set():
            raise Stopped

    return check


def _xgboost_stopper(stop: threading.Event) -> Any:
    import xgboost as xgb

    class Stopper(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            if stop.is_set():
                raise Stopped
            return False

    return Stopper()


def _lightgbm_reporter(on_round: RoundCallback) -> Callable[[Any], None]:
    """A LightGBM callback passing the early-stopping part's AUC to ``on_round``."""

    def report(env: Any) -> None:
        done = env.iteration + 1
        if done % REPORT_EVERY == 0:
            on_round(done, next(r[2] for r in env.evaluation_result_list if r[1] == "auc"))

    report.order = 40  # type: ignore[attr-defined]  # after early stopping's bookkeeping (30)
    return report


def _xgboost_reporter(on_round: RoundCallback) -> Any:
    """An XGBoost callback passing the early-stopping part's AUC to ``on_round``."""
    import xgboost as xgb

    class Reporter(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            done = epoch + 1
            if done % REPORT_EVERY == 0:
                on_round(done, float(evals_log["stop"]["auc"][-1]))
            return False

    return Reporter()


def xgboost_has_cuda() -> bool:
    """XGBoost was built with CUDA (PyPI's Linux wheels are) and a GPU is visible."""
    import shutil
    import subprocess

    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA") or shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU" in listed.stdout


def resolve_device(requested: str) -> str:
    """Stage 2's --device: 'auto' is CUDA when XGBoost can use a GPU here, else the CPU.
    LightGBM's PyPI wheel has no CUDA build, so LightGBM always trains on the CPU."""
    if requested == "auto":
        return "cuda" if xgboost_has_cuda() else "cpu"
    return requested


BOOSTERS: dict[str, type[BoosterAdapter]] = {"lgbm": LightGBMAdapter, "xgb": XGBoostAdapter}
assert tuple(BOOSTERS) == MODELS  # the light list the CLI and the config check names against


def create_booster(name: str, **kwargs: Any) -> BoosterAdapter:
    if name not in BOOSTERS:
        raise ConfigError(f"Unknown model {name!r}; choose from {','.join(BOOSTERS)}.")
    return BOOSTERS[name](**kwargs)
