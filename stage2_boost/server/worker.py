"""The forked child of the stage 2 server: become the caller's process, run its command, exit.

It takes over the caller's stdin/stdout/stderr (passed as file descriptors, so a terminal stays a
terminal and a pipe a pipe), working directory, environment, umask and arguments, resets the
signal handlers and random seeds the server had, runs the command line in its own session (the
server signals the whole group), and exits the way the stdlib's forked children do
(``multiprocessing``): non-daemon threads joined, exit handlers run, streams flushed, ``os._exit``
so that nothing unwinds into the server's loop.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import random
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

# The server's own standard streams (their objects outlive the descriptors they wrote to).
_SERVER_STREAMS = (sys.stdout, sys.stderr)


def run(
    request: dict[str, Any], fds: list[int], inherited: list[Any], server_pid: int,
    set_by_imports: dict[str, str],
) -> NoReturn:  # fmt: skip
    """Never returns: the process exits with the command's exit code. ``set_by_imports``: the
    environment variables the server's imports set (a fresh process's imports would set them
    too, where the caller has not)."""
    code = 1
    try:
        _detach(inherited)
        _adopt(request, fds, set_by_imports)
        from stage2_boost.cli import main

        code = main(request["argv"][1:], served_by=server_pid)
    except SystemExit as exit_request:
        code = _system_exit_code(exit_request)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        code = _finish(code)
        os._exit(code)


def _detach(inherited: list[Any]) -> None:
    """Default signal handlers first (the server's own must not run here), then its own
    session and process group, and the server's sockets, pipe and lock closed."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    for thing in inherited:
        if thing is None:
            continue
        with contextlib.suppress(OSError):
            if isinstance(thing, int):
                os.close(thing)
            elif isinstance(thing, socket.socket | selectors.BaseSelector):
                thing.close()


def _adopt(request: dict[str, Any], fds: list[int], set_by_imports: dict[str, str]) -> None:
    for stream in _SERVER_STREAMS:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()  # the server's log lines, before fd 1 and 2 become the caller's
            # a handler made at import time may still hold these objects; they now write to
            # the caller's descriptors, and must not keep a line back until exit
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    for fd, (name, mode) in enumerate((("stdin", "r"), ("stdout", "w"), ("stderr", "w"))):
        stream = _text_stream(fd, mode, request["stdio"][fd])
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)  # what faulthandler and friends fall back on
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in set_by_imports.items():
        os.environ.setdefault(name, value)
    sys.argv = list(request["argv"])
    _reseed()


def _text_stream(fd: int, mode: str, settings: dict[str, Any]) -> io.TextIOWrapper:
    """A standard stream set up as the caller's fresh interpreter set up its own."""
    binary: Any = open(fd, mode + "b", closefd=False)  # noqa: SIM115 (the stream outlives this)
    return io.TextIOWrapper(binary, encoding=settings["encoding"], errors=settings["errors"],
                            line_buffering=settings["line_buffering"],
                            write_through=settings.get("write_through", False))  # fmt: skip


def _reseed() -> None:
    """Fresh processes draw fresh seeds; forked ones would all share the server's."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _system_exit_code(exit_request: SystemExit) -> int:
    """What the interpreter makes of ``sys.exit(value)``."""
    value = exit_request.code
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _finish(code: int) -> int:
    """Join non-daemon threads, run exit handlers, flush: the interpreter's own shutdown steps."""
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in _SERVER_STREAMS:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what Python exits with when it cannot flush stdout
    return code
