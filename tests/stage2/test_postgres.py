"""Several tuning workers on one study in a real PostgreSQL server, started and stopped here.

Each test is a real multi-process run: worker processes are ``python -m stage2_boost train``, as
users start them. The server is a throwaway cluster in a temp folder (PostgreSQL 15 binaries,
run as the ``postgres`` user when the tests run as root), removed at the end.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from stage1_embed.common import CRASH_VARIABLE
from stage2_boost.errors import ConfigError
from stage2_boost.tune import open_storage, open_study
from tests.conftest import REPO
from tests.stage2.pgserver import LocalPostgres, find_binaries, start_server, stop_server

pytestmark = pytest.mark.slow
States = optuna.trial.TrialState


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 and a free port; stopped and removed after."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (melanoma-stack[postgres])")
    if find_binaries() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="melanoma-pg-"))
    folder.chmod(0o711)  # the postgres user must reach the cluster inside
    try:
        started = start_server(folder / "pg")
    except ConfigError as err:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL server here: {err}")
    try:
        yield started
    finally:
        stop_server(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)


_database_counter = iter(range(10_000))


def fresh_database(server: LocalPostgres) -> str:
    return server.create_database(f"t{os.getpid()}_{next(_database_counter)}")


def worker(
    features: Path, out: Path, url: str, trials: int, *extra: str, crash_at: str | None = None
) -> subprocess.Popen:
    """One tuning worker, as a user starts it (its own --out: the folder lock is per worker)."""
    command = [sys.executable, "-m", "stage2_boost", "train", "--features", str(features),
               "--out", str(out), "--storage", url, "--trials", str(trials), "--models", "lgbm",
               "--groups", "metadata,patient,embedding", "--components", "4", "--folds", "3",
               "--bootstrap", "50", "--max-rounds", "100", "--early-stopping", "10", "--no-report",
               "-v", *extra]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "worker.log").open("w")
    env = {**os.environ, **({CRASH_VARIABLE: crash_at} if crash_at else {})}
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def finished(process: subprocess.Popen, out: Path, timeout: float = 300) -> str:
    process.wait(timeout)
    log = (out / "worker.log").read_text()
    assert process.returncode == 0, log[-3000:]
    return log


def only_study(url: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def test_four_workers_share_one_study(server: LocalPostgres, features: Path) -> None:
    url = fresh_database(server)
    workers = [worker(features, features / f"w{i}", url, 3) for i in range(4)]
    logs = [finished(p, features / f"w{i}") for i, p in enumerate(workers)]
    study = only_study(url)
    numbers = [t.number for t in study.trials]
    assert len(study.trials) == 12 and sorted(numbers) == list(range(12))
    assert all(t.state in (States.COMPLETE, States.PRUNED) for t in study.trials)
    assert all(
        "joined study" in log and "postgresql+psycopg://melanoma:***@" in log for log in logs
    )
    assert not any(server.password in log for log in logs)
    listed = subprocess.run([sys.executable, "-m", "stage2_boost", "inspect", "--out", str(features),
                             "--storage", url], cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
    assert study.study_name in listed.stdout and server.password not in listed.stdout
    # any worker refitting the study's best parameters gets the same honest AUC
    refits = [worker(features, features / f"refit{i}", url, 0) for i in range(2)]
    aucs = []
    for i, process in enumerate(refits):
        finished(process, features / f"refit{i}")
        aucs.append(json.loads((features / f"refit{i}" / "metrics.json").read_text())["oof_auc"])
    assert aucs[0] == aucs[1]


def _open_at_once(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait(timeout=60)
    storage = open_storage(url)
    open_study(storage, "race", seed=0)


def test_workers_opening_an_empty_database_at_the_same_instant(server: LocalPostgres) -> None:
    """The schema-creation race (UniqueViolation in pg_type) must never kill a worker."""
    context = multiprocessing.get_context("spawn")
    for _ in range(4):
        url = fresh_database(server)
        barrier = context.Barrier(6)
        processes = [context.Process(target=_open_at_once, args=(url, barrier)) for _ in range(6)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        assert [p.exitcode for p in processes] == [0] * 6
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["race"]


def kill_a_worker_mid_trial(
    features: Path, url: str, grace: tuple[str, ...]
) -> optuna.trial.FrozenTrial:
    """A worker that SIGKILLs itself inside its second trial; returns that trial as left behind."""
    victim = worker(features, features / "victim", url, 500, *grace, crash_at="trial:2")
    victim.wait(240)
    assert victim.returncode == -signal.SIGKILL
    return only_study(url).trials[-1]


def test_a_killed_worker_fails_its_trial_and_the_study_goes_on(
    server: LocalPostgres, features: Path
) -> None:
    url = fresh_database(server)
    grace = ("--heartbeat-grace", "3")
    killed = kill_a_worker_mid_trial(features, url, grace)
    assert killed.state == States.RUNNING  # left behind by the dead worker
    time.sleep(3.5)  # past the grace period: the next trial of any worker marks it failed
    survivor = worker(features, features / "survivor", url, 2, *grace)
    finished(survivor, features / "survivor")
    trials = only_study(url).trials
    assert trials[killed.number].state == States.FAIL
    assert not any(t.state == States.RUNNING for t in trials)
    before = len(trials)
    resumed = worker(features, features / "victim", url, 1, *grace)  # the killed worker, again
    finished(resumed, features / "victim")
    assert len(only_study(url).trials) == before + 1


def test_bad_database_urls_give_one_clear_error_without_the_password(
    server: LocalPostgres,
) -> None:
    good = server.url()
    cases = {
        "password": (good.replace(server.password, "not-the-password"), "user name and password"),
        "database": (server.url("no_such_database"), "Create the database first"),
        "down": (good.replace(f":{server.port}/", ":1/"), "No server listens there"),
    }
    for url, hint in cases.values():
        with pytest.raises(ConfigError) as err:
            open_storage(url)
        message = str(err.value)
        assert hint in message and "***@" in message
        assert server.password not in message and "not-the-password" not in message
    done = subprocess.run([sys.executable, "-m", "stage2_boost", "inspect", "--storage",
                           cases["password"][0]], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout
