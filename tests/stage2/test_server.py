"""The warm stage 2 server: a served run is the run the caller's own process would have made."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stage2_boost.server import protocol
from tests.conftest import REPO

SERVED = "run by the warm stage 2 server"
TRAIN = ["train", "--folds", "3", "--trials", "2", "--max-rounds", "100", "--early-stopping",
         "10", "--bootstrap", "50", "--no-report", "--models", "lgbm"]  # fmt: skip


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A private socket folder with a short path (Unix socket paths hold ~100 bytes); every
    server started in it is stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="s2-", dir="/tmp"))
    yield folder
    env = _env(folder)
    subprocess.run([sys.executable, "-m", "stage2_boost", "server", "stop"], env=env, cwd=REPO,
                   capture_output=True, timeout=120)  # fmt: skip
    for status in folder.glob("stage2-*.json"):  # a server that ignored the stop
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(json.loads(status.read_text())["pid"], signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _env(folder: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, protocol.MODE_ENV: "auto", protocol.DIR_ENV: str(folder),
            protocol.IDLE_ENV: "120", **extra}  # fmt: skip


def _stage2(folder: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stage2_boost", *args], env=_env(folder, **extra),
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip


def _start(folder: Path, **extra: str) -> int:
    started = _stage2(folder, ["server", "start"], **extra)
    assert started.returncode == 0, started.stderr
    return int(re.search(r"pid (\d+)", started.stdout).group(1))  # type: ignore[union-attr]


def _log(folder: Path) -> str:
    return "".join(p.read_text() for p in folder.glob("stage2-*.log"))


def _served_runs(folder: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"run (\d+): \w+ in ", _log(folder))]


def _next_run(folder: Path, known: int) -> int:
    """The pid of the run served after the first ``known`` ones."""
    assert _wait_until(lambda: len(_served_runs(folder)) > known)
    return _served_runs(folder)[-1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_until(condition, seconds: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_message_frames_survive_any_split() -> None:
    data = protocol.encode({"started": 12}) + protocol.encode({"exit": -2})
    reader = protocol.MessageReader()
    messages = [m for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
    assert messages == [{"started": 12}, {"exit": -2}]


def test_fingerprint_follows_sources_and_load_time_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(protocol, "package_roots", lambda: [str(tmp_path)])
    base = protocol.fingerprint()
    monkeypatch.setenv("SOME_UNRELATED_VARIABLE", "1")
    assert protocol.fingerprint() == base  # handed to the run, not read at load time
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = protocol.fingerprint()
    assert threads != base
    (tmp_path / "module.py").write_text("x = 22\n")
    assert protocol.fingerprint() != threads


def test_a_caller_that_gave_up_is_not_served() -> None:
    import socket

    from stage2_boost.server.daemon import _hung_up

    mine, theirs = socket.socketpair()
    mine.settimeout(5)
    assert not _hung_up(mine)
    theirs.close()
    assert _hung_up(mine)
    mine.close()


def test_a_private_folder_is_required(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(protocol.ServerUnavailable, match="chmod 700"):
        protocol.ensure_private_dir(shared)
    started = _stage2(shared, ["server", "start"])
    assert started.returncode == 2 and "chmod 700" in started.stderr


@pytest.mark.slow
def test_served_run_equals_a_run_of_its_own(features: Path, server_dir: Path) -> None:
    alone = _stage2(server_dir, [*TRAIN, "--features", str(features), "--out",
                                 str(features / "alone")], **{protocol.MODE_ENV: "off"})  # fmt: skip
    assert alone.returncode == 0 and SERVED not in alone.stderr, alone.stderr
    pid = _start(server_dir)
    # stdout and stderr are pipes: the run returning at all shows the server kept no copy of them
    served = _stage2(server_dir, [*TRAIN, "--features", str(features), "--out",
                                  str(features / "served")])  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert f"{SERVED} (pid {pid}" in served.stderr
    metrics = [json.loads((features / o / "metrics.json").read_text()) for o in ("alone", "served")]
    assert metrics[0]["oof_auc"] == metrics[1]["oof_auc"]
    assert metrics[0]["oof_auc_ci95"] == metrics[1]["oof_auc_ci95"]
    # the same summary but for the run id (first line) and the output folder
    expected = alone.stdout.replace(str(features / "alone"), str(features / "served"))
    assert served.stdout.splitlines()[1:] == expected.splitlines()[1:]
    assert "blend  OOF AUC" in served.stdout
    assert re.search(r"run \d+: train exited 0", _log(server_dir))


def test_served_errors_keep_their_message_and_exit_code(tmp_path: Path, server_dir: Path) -> None:
    _start(server_dir)
    missing = _stage2(server_dir, ["train", "--features", str(tmp_path / "none")])
    assert missing.returncode == 2 and "No stage 1 manifest" in missing.stderr
    assert "Traceback" not in missing.stderr and SERVED in missing.stderr
    typo = _stage2(server_dir, ["train", "--trails", "3"])
    assert typo.returncode == 2 and "unrecognized arguments: --trails" in typo.stderr
    assert _log(server_dir).count("exited 2") == 2


def test_malformed_requests_are_refused_and_the_server_goes_on(
    tmp_path: Path, server_dir: Path
) -> None:
    import socket

    _start(server_dir)
    (address,) = server_dir.glob("*.sock")
    for message in (b"\x00\x00\x00\x02[]", protocol.encode({"argv": "train"}), b"\xff" * 8):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(address))
            sock.sendall(message)
            sock.settimeout(10)
            assert b"started" not in sock.recv(4096)
    served = _stage2(server_dir, ["train", "--features", str(tmp_path)])
    assert SERVED in served.stderr and "No stage 1 manifest" in served.stderr


def test_other_environments_and_off_run_in_their_own_process(
    tmp_path: Path, server_dir: Path
) -> None:
    _start(server_dir)
    command = ["runs", "--out", str(tmp_path)]  # no run log: exit 2, but quickly
    assert SERVED in _stage2(server_dir, ["train", "--features", str(tmp_path)]).stderr
    for extra in ({"OMP_NUM_THREADS": "1"}, {protocol.MODE_ENV: "off"}):
        result = _stage2(server_dir, command, **extra)
        assert result.returncode == 2 and "No run log" in result.stderr
    assert len(_served_runs(server_dir)) == 1  # only the train above
    bad = _stage2(server_dir, command, **{protocol.MODE_ENV: "sometimes"})
    assert bad.returncode == 2 and "must be one of auto, on, off" in bad.stderr


@pytest.mark.slow
def test_ctrl_c_and_a_killed_caller_stop_the_served_run(features: Path, server_dir: Path) -> None:
    _start(server_dir)
    long_run = [sys.executable, "-m", "stage2_boost", "train", "--features", str(features),
                "--trials", "100000", "--models", "lgbm"]  # fmt: skip
    for how in (signal.SIGINT, signal.SIGKILL):
        known = len(_served_runs(server_dir))
        caller = subprocess.Popen(long_run, env=_env(server_dir), cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        worker = _next_run(server_dir, known)
        time.sleep(3)  # into the trials
        caller.send_signal(how)
        _, stderr = caller.communicate(timeout=60)
        if how == signal.SIGINT:
            assert caller.returncode == 130 and "interrupted" in stderr, stderr[-2000:]
        else:
            assert caller.returncode == -signal.SIGKILL
        assert _wait_until(lambda w=worker: not _alive(w)), f"run {worker} still alive after {how}"


@pytest.mark.slow
def test_a_killed_server_stops_its_runs_and_says_so(features: Path, server_dir: Path) -> None:
    pid = _start(server_dir)
    caller = subprocess.Popen([sys.executable, "-m", "stage2_boost", "train", "--features",
                               str(features), "--trials", "100000", "--models", "lgbm"],
                              env=_env(server_dir), cwd=REPO, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    worker = _next_run(server_dir, 0)
    time.sleep(2)
    os.kill(pid, signal.SIGKILL)
    _, stderr = caller.communicate(timeout=60)
    assert caller.returncode == 1 and "the stage 2 server ended before run" in stderr
    assert _wait_until(lambda: not _alive(worker))


def test_stop_and_idle_time_end_the_server(server_dir: Path) -> None:
    pid = _start(server_dir)
    assert "serves this environment" in _stage2(server_dir, ["server", "status"]).stdout
    stopped = _stage2(server_dir, ["server", "stop"])
    assert "stopped 1" in stopped.stdout and not _alive(pid)
    assert not list(server_dir.glob("*.sock")) and not list(server_dir.glob("*.json"))
    short = _start(server_dir, **{protocol.IDLE_ENV: "1"})
    assert _wait_until(lambda: not _alive(short), 30)
    assert "idle for 1 s; stopping" in _log(server_dir) and not list(server_dir.glob("*.sock"))


@pytest.mark.slow
def test_on_starts_a_server_after_a_run_for_the_next_one(features: Path, server_dir: Path) -> None:
    args = [*TRAIN, "--features", str(features)]
    first = _stage2(server_dir, args, **{protocol.MODE_ENV: "on"})
    assert first.returncode == 0 and SERVED not in first.stderr, first.stderr
    assert "started a warm stage 2 server" in first.stderr
    assert _wait_until(lambda: "listening on" in _log(server_dir), 60)
    second = _stage2(server_dir, args, **{protocol.MODE_ENV: "on"})
    assert second.returncode == 0 and SERVED in second.stderr, second.stderr
    assert "started a warm" not in second.stderr
