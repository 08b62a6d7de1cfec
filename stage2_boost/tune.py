"""Optuna studies: storage, naming, resuming, and the cross-validated objective."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from stage1_embed.common import crash_point

from .boosters import BoosterAdapter
from .cv import FoldMatrices, cross_validate
from .errors import ConfigError

logger = logging.getLogger(__name__)
# the first trial of a new study (studies made before this name say "library defaults")
STARTING_VALUES = "starting values"
# Pruning steps. Fold-level: the running mean AUC after each fold. With round-level pruning, the
# first fold also reports its early-stopping AUC every few boosting rounds at step = rounds done
# (from the warm-up on: earlier steps are never judged, and each report is a storage write), so
# the fold steps move past any round count (one step axis, no collisions).
FOLD_STEP = 1_000_000
ROUND_WARMUP = 50  # rounds before a trial can be pruned on its first fold's curve
GRACE_SECONDS = 30  # a RUNNING trial whose process died is marked FAIL after this


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ***, safe for logs and reports."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_storage(
    url: str, grace_seconds: int = GRACE_SECONDS, heartbeat: bool = True
) -> optuna.storages.BaseStorage:
    """An Optuna storage for any RDB URL; heartbeats let killed trials be marked failed.

    Without ``heartbeat`` (a storage only this process uses: the default SQLite file under the
    locked output folder, whose interrupted trials ``open_study`` fails at once), no heartbeat
    thread writes to it during each trial and no stale-trial query runs between trials.

    On PostgreSQL, workers that start together would all create Optuna's tables at once (one then
    dies of a unique violation in ``pg_type``): the schema is created under an advisory lock.

    The storage comes wrapped in Optuna's trial cache, the one every Study puts around a bare
    RDBStorage for itself: wrapped once here, all the studies of a run share it, so a study's
    trials are read from the database once per run rather than once per Study object (loading,
    resuming, sampling: three reads of every trial so far, ~0.1 s per 200 trials on SQLite)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trial lines: our own log does it
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    interval = max(1, grace_seconds // 3) if heartbeat else None
    try:
        with schema_lock(url):
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=interval, grace_period=grace_seconds if heartbeat else None,
                engine_kwargs={"pool_pre_ping": True},
            )  # fmt: skip
    except Exception as err:  # SQLAlchemy/driver errors: the message may embed the URL
        raise storage_error(url, err) from None
    cache = getattr(optuna.storages, "_CachedStorage", None)  # exported, named private
    return cache(storage) if cache is not None else storage


def storage_url(storage: optuna.storages.BaseStorage) -> str:
    """The database URL of an ``open_storage`` result (bare or inside Optuna's trial cache)."""
    backend = getattr(storage, "_backend", storage)
    return str(getattr(backend, "url", ""))


def is_shared(storage: optuna.storages.BaseStorage) -> bool:
    """Whether other workers may use the storage at the same time (a database server)."""
    return not storage_url(storage).startswith("sqlite")


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock for the block (a no-op for other databases)."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY}
                )
    finally:
        engine.dispose()


def storage_error(url: str, err: BaseException) -> ConfigError:
    """One actionable paragraph for a storage that cannot be opened; never the password."""
    text = str(err).strip()
    if isinstance(err, ModuleNotFoundError) or "No module named" in text:
        return ConfigError(
            f"Cannot open the Optuna storage {mask_url(url)}: its database driver is not installed "
            f"({text}). For PostgreSQL: pip install 'melanoma-stack[postgres]' (psycopg 3), and "
            "use a postgresql:// or postgresql+psycopg:// URL."
        )
    lines = [line for line in text.splitlines() if line.strip() and "sqlalche.me" not in line]
    reason = " ".join(lines[:2])[:400] if lines else type(err).__name__
    reason = reason.replace(_password(url), "***") if _password(url) else reason
    hint = next((h for key, h in _HINTS if key in text), _DEFAULT_HINT)
    return ConfigError(
        f"Cannot open the Optuna storage {mask_url(url)}: {mask_url(reason)}. {hint}"
    )


def _password(url: str) -> str:
    match = re.search(r"://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else ""


_LOCK_KEY = 0x6D656C616E6F6D61  # "melanoma": one advisory lock for Optuna's schema
_DEFAULT_HINT = (
    "Check that the database is running and reachable and the URL is right; or omit --storage "
    "to use a local SQLite file."
)
_HINTS = (
    ("password authentication failed", "Check the user name and password in the URL."),
    ("does not exist", "Create the database first (e.g. createdb), or fix its name in the URL."),
    ("Connection refused", "No server listens there: start it (README: Scaling out) or fix the "
     "host and port."),
    ("could not translate host name", "The host name in the URL is unknown: fix it."),
)  # fmt: skip


def study_name(dataset: str, model: str, feature_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+,=-]+", "-", f"{dataset}.{model}.{feature_key}")


def open_study(
    storage: optuna.storages.BaseStorage, name: str, seed: int, exclusive: bool = False,
    prune_rounds: bool = False, first_params: dict[str, Any] | None = None,
) -> optuna.Study:  # fmt: skip
    """Create or resume ``name``; the sampler seed moves on with the trial count.

    ``exclusive`` says no other process can be using the storage (the default SQLite file under a
    locked output folder): trials still RUNNING were then interrupted, and are marked FAIL now
    rather than after the heartbeat grace period. On a database server several workers may share
    the study: each then seeds its sampler with its process id too, so that workers starting at
    the same moment do not propose the same parameters. A new study's first trial is
    ``first_params`` (the adapter's defaults): the search can then only keep or beat them.

    The pruner is Optuna's median rule: after five finished trials, a trial whose best running
    value is below the median of the others' at the same step stops (the first fold, or with
    ``prune_rounds`` its first ``ROUND_WARMUP`` rounds, are never judged).
    """
    url = storage_url(storage)
    shared = is_shared(storage)
    with schema_lock(url):  # concurrent creators of one study wait for each other
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
            n_done = len(existing.get_trials(deepcopy=False))
            if exclusive:
                fail_interrupted_trials(existing)
        except KeyError:
            n_done = 0
        worker = os.getpid() if shared else 0
        sampler = optuna.samplers.TPESampler(seed=seed + n_done + worker, multivariate=True)
        warmup = ROUND_WARMUP if prune_rounds else 1
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner,
            direction="maximize", load_if_exists=True,
        )  # fmt: skip
        if n_done == 0 and first_params:  # a new study starts from the project's starting values
            study.enqueue_trial(first_params, user_attrs={"start": STARTING_VALUES})
    if shared:
        logger.info("joined study %s in %s with %d trial(s) so far (worker pid %d); other "
                    "workers may add trials at the same time", name, mask_url(url), n_done,
                    os.getpid())  # fmt: skip
    return study


def fail_interrupted_trials(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL (Optuna's ``Study.tell``, which takes
    a trial number from any process); returns how many."""
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if stale:
        logger.warning("%s: %d interrupted trial(s) marked failed", study.study_name, len(stale))
    return len(stale)


def make_objective(
    adapter: BoosterAdapter, folds: Sequence[FoldMatrices], feature_set: dict[str, Any],
    prune_rounds: bool = False,
) -> Any:  # fmt: skip
    """Mean fold AUC of the trial's parameters; per-fold AUCs feed the pruner, and with
    ``prune_rounds`` so does the first fold's early-stopping AUC every few rounds (the cheap,
    low-fidelity look at a trial: a poor one stops a fraction of the way into its first fold)."""
    first = folds[0].fold
    fold_step = FOLD_STEP if prune_rounds else 0

    def objective(trial: optuna.Trial) -> float:
        params = adapter.suggest_params(trial)
        trial.set_user_attr("feature_set", feature_set)
        crash_point("trial")  # the tests' deterministic kill of a worker inside a running trial

        def report(fold: int, running_auc: float) -> None:
            trial.report(running_auc, fold_step + fold)
            if trial.should_prune():
                prune(f"after fold {fold} (running AUC {running_auc:.4f})")

        def report_round(fold: int, rounds: int, stop_auc: float) -> None:
            if fold != first or rounds < ROUND_WARMUP:  # the pruner never judges these steps
                return
            trial.report(stop_auc, rounds)
            if trial.should_prune():
                prune(f"after {rounds} rounds of fold {fold} (early-stopping AUC {stop_auc:.4f})")

        def prune(where: str) -> None:
            trial.set_user_attr("pruned", where)
            raise optuna.TrialPruned(where)

        result = cross_validate(adapter, folds, params, on_fold=report,
                                on_round=report_round if prune_rounds else None)  # fmt: skip
        trial.set_user_attr("fold_aucs", result.fold_aucs)
        trial.set_user_attr("best_iterations", result.best_iterations)
        return result.mean_auc

    return objective


def run_study(study: optuna.Study, objective: Any, n_trials: int, timeout: float | None) -> None:
    """Add ``n_trials`` trials (or stop at ``timeout`` seconds), logging one line per trial.

    Ctrl-C lets the running trial finish and then stops (KeyboardInterrupt, between trials, when
    no storage write is half done); a second Ctrl-C stops at once."""
    if n_trials <= 0:
        return

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = _best_value(study)  # other workers may add trials too; read through the trial cache
        if trial.state == optuna.trial.TrialState.PRUNED and "pruned" in trial.user_attrs:
            outcome = f"pruned {trial.user_attrs['pruned']}"
        else:
            outcome = (
                f"{trial.state.name.lower()}: {trial.value:.4f}"
                if trial.value is not None
                else trial.state.name.lower()
            )
        logger.info("%s trial %d %s (best %s)", study.study_name.split(".")[1], trial.number, outcome,
                    f"{best:.4f}" if best is not None else "-")  # fmt: skip

    with _stop_on_interrupt() as interrupted:

        def stop_if_interrupted(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
            if interrupted:
                study.stop()

        study.optimize(objective, n_trials=n_trials, timeout=timeout,
                       callbacks=[log_trial, stop_if_interrupted], gc_after_trial=False)  # fmt: skip
    if interrupted:
        raise KeyboardInterrupt


@contextmanager
def _stop_on_interrupt() -> Iterator[list[int]]:
    """While the block runs, the first SIGINT is only noted (the list becomes non-empty) and
    the usual handler comes back for the next one. Elsewhere than the main thread: no-op."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler  # None: set in C

    def note(signum: int, _frame: Any) -> None:
        noted.append(signum)
        signal.signal(signal.SIGINT, previous)
        logger.warning("interrupt: stopping after the running trial (Ctrl-C again stops now)")

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass(frozen=True)
class Choice:
    """What tuning chose: parameters, their CV AUC in the study, the early-stopped rounds per
    fold, and why (the best trial, or the defaults it did not clearly beat)."""

    params: dict[str, Any]
    tuning_auc: float | None  # None: untuned defaults
    best_iterations: list[int] | None
    reason: str = "best trial"


def best_choice(study: optuna.Study, adapter: BoosterAdapter) -> Choice:
    """The best finished trial, unless it beats the study's first trial (the adapter's starting
    values: learning rate 0.05, 15 leaves or depth 4, ...) by
    less than one standard error of their paired per-fold difference: then the defaults (the
    one-standard-error rule; with ~70 melanomas the best of many trials is mostly the luckiest,
    and its out-of-fold AUC falls as trials are added). The defaults also when nothing finished."""
    if _best_value(study) is None:
        return Choice(adapter.default_params(), None, None, "untuned defaults")
    best = study.best_trial
    chosen = Choice(dict(best.params), best.value, best.user_attrs.get("best_iterations"))
    defaults = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.user_attrs.get("start") in (STARTING_VALUES, "library defaults")), None)  # fmt: skip
    if defaults is None or defaults.number == best.number:
        return chosen
    gain = np.subtract(
        best.user_attrs.get("fold_aucs") or [], defaults.user_attrs.get("fold_aucs") or []
    )
    if len(gain) < 2:
        return chosen
    se = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    if gain.mean() > se:
        return replace(chosen, reason=f"best trial: +{gain.mean():.4f} over the defaults, beyond "
                       f"one standard error ({se:.4f})")  # fmt: skip
    return Choice(dict(defaults.params), defaults.value, defaults.user_attrs.get("best_iterations"),
                  f"defaults: the best trial ({best.number}) beat them by {gain.mean():+.4f}, within "
                  f"one standard error ({se:.4f}) of the per-fold differences")  # fmt: skip


def _best_value(study: optuna.Study) -> float | None:
    # No deep copies: logging each trial's line would otherwise copy the whole study each time.
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    values = [t.value for t in done if t.value is not None]
    return max(values) if values else None
