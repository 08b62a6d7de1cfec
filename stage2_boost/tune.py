"""Optuna studies: storage, naming, resuming, and the cross-validated objective."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from .boosters import BoosterAdapter
from .cv import FoldMatrices, cross_validate
from .errors import ConfigError

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30  # a RUNNING trial whose process died is marked FAIL after this


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ***, safe for logs and reports."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_storage(url: str, grace_seconds: int = GRACE_SECONDS) -> optuna.storages.BaseStorage:
    """An Optuna storage for any RDB URL; heartbeats let killed trials be marked failed."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=grace_seconds,
            engine_kwargs={"pool_pre_ping": True},
        )  # fmt: skip
    except Exception as err:  # SQLAlchemy/driver errors: the message may embed the URL
        reason = mask_url(str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise ConfigError(
            f"Cannot open the Optuna storage {mask_url(url)}: {reason}. Check that the database "
            "is running and reachable, the driver is installed (e.g. psycopg2 for PostgreSQL), and "
            "the URL is right; or omit --storage to use a local SQLite file."
        ) from None


def study_name(dataset: str, model: str, feature_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+,=-]+", "-", f"{dataset}.{model}.{feature_key}")


def open_study(
    storage: optuna.storages.BaseStorage, name: str, seed: int, exclusive: bool = False
) -> optuna.Study:
    """Create or resume ``name``; the sampler seed moves on with the trial count.

    ``exclusive`` says no other process can be using the storage (the default SQLite file under a
    locked output folder): trials still RUNNING were then interrupted, and are marked FAIL now
    rather than after the heartbeat grace period.
    """
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
        n_done = len(existing.trials)
        if exclusive:
            fail_interrupted_trials(existing)
    except KeyError:
        n_done = 0
    sampler = optuna.samplers.TPESampler(seed=seed + n_done, multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )  # fmt: skip


def fail_interrupted_trials(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL; returns how many."""
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_system_attr(
            trial._trial_id, "fail_reason", "interrupted (process killed)"
        )
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    if stale:
        logger.warning("%s: %d interrupted trial(s) marked failed", study.study_name, len(stale))
    return len(stale)


def make_objective(
    adapter: BoosterAdapter, folds: Sequence[FoldMatrices], feature_set: dict[str, Any]
) -> Any:
    """Mean fold AUC of the trial's parameters; per-fold AUCs feed the pruner."""

    def objective(trial: optuna.Trial) -> float:
        params = adapter.suggest_params(trial)
        trial.set_user_attr("feature_set", feature_set)

        def report(fold: int, running_auc: float) -> None:
            trial.report(running_auc, fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"running AUC {running_auc:.4f} after fold {fold}")

        result = cross_validate(adapter, folds, params, on_fold=report)
        trial.set_user_attr("fold_aucs", result.fold_aucs)
        trial.set_user_attr("best_iterations", result.best_iterations)
        return result.mean_auc

    return objective


def run_study(study: optuna.Study, objective: Any, n_trials: int, timeout: float | None) -> None:
    """Add ``n_trials`` trials (or stop at ``timeout`` seconds), logging one line per trial."""
    if n_trials <= 0:
        return

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = _best_value(study)
        if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            outcome = (
                f"pruned after fold {step} (running AUC {trial.intermediate_values[step]:.4f})"
            )
        else:
            outcome = (
                f"{trial.state.name.lower()}: {trial.value:.4f}"
                if trial.value is not None
                else trial.state.name.lower()
            )
        logger.info("%s trial %d %s (best %s)", study.study_name.split(".")[1], trial.number, outcome,
                    f"{best:.4f}" if best is not None else "-")  # fmt: skip

    study.optimize(
        objective, n_trials=n_trials, timeout=timeout, callbacks=[log_trial], gc_after_trial=False
    )


@dataclass(frozen=True)
class Choice:
    """What tuning chose: parameters, the study's best CV AUC, the early-stopped rounds per fold."""

    params: dict[str, Any]
    tuning_auc: float | None  # None: untuned defaults
    best_iterations: list[int] | None


def best_choice(study: optuna.Study, adapter: BoosterAdapter) -> Choice:
    """The best finished trial, or the adapter's defaults if the study has none."""
    if _best_value(study) is None:
        return Choice(adapter.default_params(), None, None)
    best = study.best_trial
    return Choice(dict(best.params), best.value, best.user_attrs.get("best_iterations"))


def _best_value(study: optuna.Study) -> float | None:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(t.value for t in done if t.value is not None) if done else None
