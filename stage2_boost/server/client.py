"""Hand a ``python -m stage2_boost`` command to a warm server, or say that none can take it.

Before the server has said "started", every failure means "run it here instead": nothing has run
yet. After it, the run belongs to the server's child: this process forwards its signals (Ctrl-C
interrupts the run exactly as it would a local one), and exits with the run's exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from . import protocol
from .protocol import ServerUnavailable

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_CONNECT_TIMEOUT_S = 30.0  # connecting and the server's "started" (it reads requests in turn)


def run_through_server(argv: list[str]) -> int | None:
    """The exit code of ``argv`` run by a warm server, or None when it should run in this process
    (no server, another fingerprint, ``MELANOMA_STAGE2_SERVER=off``, a command it does not serve)."""
    if not argv or argv[0] not in protocol.SERVED_COMMANDS or not hasattr(os, "fork"):
        return None
    if protocol.mode() == "off":
        return None
    try:
        key = protocol.fingerprint()
        sock = connect(key)
    except ServerUnavailable:
        return None
    with sock:
        try:
            started = _hand_over(sock, key, argv)
        except (OSError, ValueError, ServerUnavailable):
            return None  # refused or gone before anything ran
        return _wait_for_exit(sock, started)


def connect(key: str) -> socket.socket:
    """A connection to the server of fingerprint ``key``; ServerUnavailable if none listens."""
    folder = protocol.server_dir()
    path = protocol.socket_path(folder, key)
    if not path.exists():
        raise ServerUnavailable(f"no server at {path}")
    protocol.ensure_private_dir(folder)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_CONNECT_TIMEOUT_S)
    try:
        sock.connect(os.fspath(path))
    except OSError as err:
        sock.close()
        raise ServerUnavailable(f"{path}: {err.strerror}") from err
    return sock


def _hand_over(sock: socket.socket, key: str, argv: list[str]) -> int:
    """Send the command with this process's stdin/stdout/stderr; the pid of the run."""
    fds = [0, 1, 2]
    for fd in fds:
        os.fstat(fd)  # a closed standard stream: run here, where Python knows what to do
    request = {
        "key": key,
        "argv": [sys.argv[0], *argv],
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": _umask(),
        "stdio": [_stream_settings(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
    }
    protocol.send(sock, request, fds)
    reply, _ = protocol.receive_first(sock, 0)
    if "started" not in reply:
        raise ServerUnavailable(str(reply.get("refused", reply)))
    return int(reply["started"])


def _wait_for_exit(sock: socket.socket, pid: int) -> int:
    sock.settimeout(None)
    reader = protocol.MessageReader()

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # the server has gone; the read below reports it
            protocol.send(sock, {"signal": signum})

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return _server_died(pid)
            for message in reader.feed(data):
                if "exit" in message:
                    return _exit_code(int(message["exit"]), previous)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _server_died(pid: int) -> int:
    """The server died (killed?) with the run going on: nothing would report its end, so stop
    it rather than leave it writing to this terminal unseen."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    print(
        f"error: the stage 2 server ended before run {pid} did, so the run was stopped; the "
        f"server's log is in {protocol.server_dir()}. Rerun the command (with "
        f"{protocol.MODE_ENV}=off to run it in this process).",
        file=sys.stderr,
    )
    return 1


def _exit_code(code: int, previous: dict[signal.Signals, Any]) -> int:
    """The run's exit code; a run killed by a signal kills this process the same way."""
    if code >= 0:
        return code
    signum = -code
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    signal.signal(signum, signal.SIG_DFL)
    sys.stdout.flush()
    os.kill(os.getpid(), signum)
    return 128 + signum


def _stream_settings(stream: Any) -> dict[str, Any]:
    """How this (fresh) interpreter set up a standard stream, for the run to copy."""
    return {
        "encoding": getattr(stream, "encoding", None) or "utf-8",
        "errors": getattr(stream, "errors", None) or "strict",
        "line_buffering": bool(getattr(stream, "line_buffering", False)),
        "write_through": bool(getattr(stream, "write_through", False)),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def should_start(argv: list[str]) -> bool:
    """After a train run in this process: start a server for the next one? ``on``: yes; ``auto``:
    only at an interactive terminal (a batch job or CI would leave a process behind)."""
    if not argv or argv[0] != "train" or not hasattr(os, "fork"):
        return False
    chosen = protocol.mode()
    return chosen == "on" or (chosen == "auto" and sys.stdin.isatty())


def start_in_background(environ: Mapping[str, str]) -> None:
    """Start a server for the next run (this one ran here) and say so, once. ``environ``: this
    process's environment before the run (its imports add variables of their own)."""
    try:
        idle = protocol.idle_seconds()
        pid, _ = start_server(environ=environ)
    except (OSError, ValueError, ServerUnavailable) as err:
        print(f"note: could not start a warm stage 2 server: {err}", file=sys.stderr)
        return
    print(
        f"note: started a warm stage 2 server in the background (pid {pid}): the next stage 2 "
        f"runs here skip the library imports. It stops after {idle / 60:.0f} idle minutes; "
        f"`python -m stage2_boost server stop` stops it now, {protocol.MODE_ENV}=off turns "
        "this off.",
        file=sys.stderr,
    )


def start_server(
    wait_s: float | None = None, environ: Mapping[str, str] | None = None
) -> tuple[int, Path]:
    """Start a server for the fingerprint of ``environ`` (default: this process's environment)
    in the background, detached: its own session, no inherited terminal or pipes. With
    ``wait_s``, wait until it answers.

    Returns the pid that was started (or the one already serving) and the server's log."""
    import subprocess  # only here: the client's own start-up stays small

    environ = dict(os.environ if environ is None else environ)
    key = protocol.fingerprint(environ)
    folder = protocol.ensure_private_dir(protocol.server_dir())
    log = protocol.log_path(folder, key)
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stage2_boost", "server", "run", "--key", key],
            stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, close_fds=True,
            start_new_session=True, env=environ,
        )  # fmt: skip
    if wait_s is None:
        return process.pid, log
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            return ping(key), log
        except ServerUnavailable:
            if process.poll() is not None:  # it exited: another one serves, or it failed
                try:
                    return ping(key), log
                except ServerUnavailable:
                    raise ServerUnavailable(_tail(log)) from None
            time.sleep(0.05)
    raise ServerUnavailable(f"no answer after {wait_s:.0f} s; see {log}")


def ping(key: str) -> int:
    """The pid of the server of fingerprint ``key`` if it answers."""
    with connect(key) as sock:
        try:
            protocol.send(sock, {"ping": True})
            reply, _ = protocol.receive_first(sock, 0)
        except (OSError, ValueError) as err:
            raise ServerUnavailable(str(err)) from err
    if "pong" not in reply:
        raise ServerUnavailable(str(reply))
    return int(reply["pong"])


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        text = []
    return f"the server exited; the end of {log}:\n" + "\n".join(text)
