"""``python -m stage2_boost server start|stop|status``: the warm stage 2 process by hand."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import Any

from . import protocol
from .client import ping, start_server
from .protocol import ServerUnavailable

_START_WAIT_S = 60.0
_STOP_WAIT_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stage2_boost server",
        description="A warm stage 2 process: later stage 2 commands (train, predict, inspect, "
        "runs) with the same interpreter, packages, source and load-time environment skip the "
        f"library imports. {protocol.MODE_ENV}=auto|on|off chooses whether they use or start one.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start one for this environment and wait until it answers")
    start.add_argument("--idle", type=float, help="seconds without runs before it stops "
                       f"(default: ${protocol.IDLE_ENV} or {protocol.DEFAULT_IDLE_S})")  # fmt: skip
    sub.add_parser("stop", help="stop every server of this user (runs in progress finish first)")
    sub.add_parser("status", help="list this user's servers")
    run = sub.add_parser("run", help="(internal) be the server, in the foreground")
    run.add_argument("--key", required=True)
    run.add_argument("--idle", type=float)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        idle = getattr(args, "idle", None)
        if idle is not None:
            os.environ[protocol.IDLE_ENV] = str(idle)
        if args.action == "run":
            from .daemon import serve

            return serve(args.key, protocol.idle_seconds())
        return {"start": _start, "stop": _stop, "status": _status}[args.action]()
    except (ServerUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _start() -> int:
    idle = protocol.idle_seconds()
    key = protocol.fingerprint()
    with contextlib.suppress(ServerUnavailable):
        print(f"a stage 2 server for this environment is already running (pid {ping(key)})")
        return 0
    pid, log = start_server(wait_s=_START_WAIT_S)
    print(f"stage 2 server ready (pid {pid}); it stops after {idle:.0f} idle seconds; log: {log}")
    return 0


def _stop() -> int:
    servers = _servers()
    if not servers:
        print("no stage 2 server is running")
        return 0
    for status in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(status["pid"], signal.SIGTERM)
    folder = protocol.server_dir()

    def running() -> list[int]:  # a server holds its lock until it has exited
        return [s["pid"] for s in servers if protocol.is_serving(folder, s["key"])]

    deadline = time.monotonic() + _STOP_WAIT_S
    while time.monotonic() < deadline and running():
        time.sleep(0.1)
    left = running()
    stopped = len(servers) - len(left)
    print(
        f"stopped {stopped} stage 2 server(s)" + (f"; still finishing runs: {left}" if left else "")
    )
    return 0


def _status() -> int:
    key, folder = protocol.fingerprint(), protocol.server_dir()
    servers = _servers()
    if not servers:
        print(f"no stage 2 server is running (folder {folder})")
    for s in servers:
        fits = "serves this environment" if s["key"] == key else "another environment or source"
        print(f"pid {s['pid']}: since {s['started']}, stops after {s['idle_s']:.0f} idle s; "
              f"{fits}; log {protocol.log_path(folder, s['key'])}")  # fmt: skip
    return 0


def _servers() -> list[dict[str, Any]]:
    """The status files of live servers in this user's folder (stale ones are removed)."""
    folder = protocol.server_dir()
    if not folder.is_dir():
        return []
    protocol.ensure_private_dir(folder)
    return protocol.read_statuses(folder)
