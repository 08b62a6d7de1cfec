"""The stage 2 server: import the libraries once, then fork a fresh child for every run.

One process per fingerprint (an exclusive lock), single-threaded: a selector waits on the
listening socket, the callers' connections and a wake-up pipe for SIGCHLD/SIGTERM. It forks only
from this one thread and never runs OpenMP code itself (no boosting, no threads of its own), so
each child starts LightGBM's and XGBoost's thread pools from scratch, as a fresh process would.
The threads that exist at fork time (OpenBLAS's pools, pyarrow's jemalloc background thread)
handle fork themselves (pthread_atfork handlers). It stops after its idle time without runs, or on SIGTERM
(``server stop``) once the runs in progress have finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from stage1_embed.atomic import atomic_write_text

from . import protocol, worker

PRELOAD = ("stage2_boost.cli", "stage2_boost.train", "stage2_boost.report",
           "stage2_boost.model.predict", "stage2_boost.inspect_studies", "stage2_boost.runs")  # fmt: skip
_REQUEST_TIMEOUT_S = 5.0
_FORWARDABLE = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def serve(key: str, idle_s: float) -> int:
    """Run the server of fingerprint ``key`` until it has been idle for ``idle_s`` seconds."""
    folder = protocol.ensure_private_dir(protocol.server_dir())
    lock = _lock(protocol.lock_path(folder, key))
    if lock is None:
        _log(f"another server for {key} is running; this one exits")
        return 0
    if protocol.fingerprint() != key:
        _log(f"this process's fingerprint is not {key} (other code or environment); exiting")
        return 1
    started, before = time.monotonic(), dict(os.environ)
    preload()
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    address = protocol.socket_path(folder, key)
    status = protocol.status_path(folder, key)
    with _listen(address) as (listener, inode):
        _log(f"pid {os.getpid()}: preloaded in {time.monotonic() - started:.1f} s "
             f"({threading.active_count()} Python thread(s), {_os_threads()} OS threads); "
             f"listening on {address}")  # fmt: skip
        _retire_stale_servers(folder, _write_status(status, key, address, idle_s))
        _remove_old_files(folder)
        try:
            listening = Listener(listener, address, inode)
            Server(listening, key, idle_s, lock, set_by_imports).loop()
        finally:
            status.unlink(missing_ok=True)
    return 0


def preload() -> None:
    """Import what stage 2's commands use and touch the lazily loaded parts that cost (Optuna's
    storage: SQLAlchemy's mappers and Alembic, 0.4 s; matplotlib's fonts). None of it starts a
    thread (a Parquet round trip would start Arrow's I/O pool, and saved nothing measurable)."""
    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    _warm_storage()
    _warm_figure()


def _warm_storage() -> None:
    import optuna

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    storage.engine.dispose()


def _warm_figure() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), layout="constrained")
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set(title="warm-up", xlabel="x", ylabel="y")
    ax.legend(fontsize=8)
    fig.savefig(io.BytesIO(), format="png", dpi=50)
    plt.close(fig)


@dataclass
class Listener:
    """The listening socket and the inode of its file (to remove it only while it is ours)."""

    sock: socket.socket
    address: Path
    inode: int

    def remove_file(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.address).st_ino == self.inode:
                self.address.unlink()


@dataclass
class _Run:
    pid: int
    conn: socket.socket | None
    command: str
    started: float = field(default_factory=time.monotonic)
    reader: protocol.MessageReader = field(default_factory=protocol.MessageReader)


class Server:
    """The accept / fork / reap loop."""

    def __init__(
        self, listener: Listener, key: str, idle_s: float, lock: int, set_by_imports: dict[str, str]
    ) -> None:
        self.listener: Listener | None = listener
        self.key, self.idle_s, self.lock = key, idle_s, lock
        self.set_by_imports = set_by_imports  # environment variables the preload set
        self.runs: dict[int, _Run] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.last_active = time.monotonic()
        self.served = 0
        self._pipe = (-1, -1)  # the wake-up pipe, made by loop()

    def loop(self) -> None:
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, _ignore)  # a handler, so that SIGCHLD wakes the selector
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._request_stop)
        assert self.listener is not None
        self.selector.register(self.listener.sock, selectors.EVENT_READ, "accept")
        self.selector.register(wake_read, selectors.EVENT_READ, "wake")
        self._pipe = (wake_read, wake_write)
        try:
            while self._keep_going():
                timeout = None if self.runs else self.last_active + self.idle_s - time.monotonic()
                for event, _ in self.selector.select(timeout):
                    self._dispatch(event)
                self._reap()
        finally:
            self._close_listener()
            signal.set_wakeup_fd(-1)
            self.selector.close()
            for fd in self._pipe:
                os.close(fd)
        _log(f"stopped after {self.served} run(s)")

    def _keep_going(self) -> bool:
        if self.stopping:
            self._close_listener()
            return bool(self.runs)
        if not self.runs and time.monotonic() - self.last_active >= self.idle_s:
            _log(f"idle for {self.idle_s:.0f} s; stopping")
            return False
        return True

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True  # acted on by the loop (the selector wakes through the pipe)

    def _close_listener(self) -> None:
        """No new runs: callers that look now find no socket and run in their own process."""
        if self.listener is not None:
            self.selector.unregister(self.listener.sock)
            self.listener.remove_file()
            self.listener.sock.close()
            self.listener = None

    def _dispatch(self, event: selectors.SelectorKey) -> None:
        if event.data == "accept" and self.listener is not None:
            self._accept()
        elif event.data == "wake":
            with contextlib.suppress(BlockingIOError):
                while os.read(event.fd, 512):
                    pass
        elif isinstance(event.data, _Run):
            self._from_client(event.data)

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.sock.accept()
        except BlockingIOError:
            return
        conn.settimeout(_REQUEST_TIMEOUT_S)
        try:
            if _peer_uid(conn) != os.getuid():
                raise PermissionError("a caller of another user")
            request, fds = protocol.receive_first(conn, 3)
        except (OSError, ValueError) as err:
            _log(f"dropped a connection: {err}")
            conn.close()
            return
        if "ping" in request:
            self._reply_and_close(conn, {"pong": os.getpid()})
        elif not self._acceptable(request, fds) or self.stopping or _hung_up(conn):
            for fd in fds:
                os.close(fd)  # a caller that gave up waiting runs the command itself
            self._reply_and_close(conn, {"refused": "stopping or another fingerprint"})
        else:
            self._start_run(conn, request, fds)

    def _acceptable(self, request: dict[str, Any], fds: list[int]) -> bool:
        """A run request of this fingerprint with the caller's three standard streams."""
        fields = {"argv": list, "cwd": str, "env": dict, "umask": int, "stdio": list}
        well_formed = all(isinstance(request.get(k), t) for k, t in fields.items())
        return well_formed and request.get("key") == self.key and len(fds) == 3

    def _reply_and_close(self, conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            protocol.send(conn, message)
        conn.close()

    def _start_run(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() with threads alive; ours are the pools named in
            # the module docstring, which handle fork themselves.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            worker.run(request, fds, self._inherited(conn), os.getppid(), self.set_by_imports)
        for fd in fds:
            os.close(fd)  # the caller's terminal or pipes must not stay open in the server
        run = _Run(pid, conn, " ".join(request["argv"][1:2]))
        self.runs[pid] = run
        self.served += 1
        try:
            protocol.send(conn, {"started": pid})
        except OSError:
            self._client_gone(run)
            return
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, run)
        _log(f"run {pid}: {run.command} in {request['cwd']}")

    def _inherited(self, own: socket.socket) -> list[Any]:
        """What the child must close: the server's sockets, pipe and lock, others' connections."""
        others = [run.conn for run in self.runs.values() if run.conn is not None]
        listener = self.listener.sock if self.listener is not None else None
        return [listener, own, *others, *self._pipe, self.lock, self.selector]

    def _from_client(self, run: _Run) -> None:
        assert run.conn is not None
        try:
            data = run.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._client_gone(run)
            return
        for message in run.reader.feed(data):
            signum = int(message.get("signal", 0))
            if signum in _FORWARDABLE and run.pid in self.runs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.pid, signum)

    def _client_gone(self, run: _Run) -> None:
        """The caller died (e.g. SIGKILL): stop its run, as the caller's own process would have."""
        if run.pid in self.runs:
            _log(f"run {run.pid}: its caller went away; terminating it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGTERM)
        self._drop_connection(run)

    def _drop_connection(self, run: _Run) -> None:
        if run.conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(run.conn)
            run.conn.close()
            run.conn = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if run.conn is not None:
                with contextlib.suppress(OSError):
                    run.conn.setblocking(True)
                    protocol.send(run.conn, {"exit": code})
            self._drop_connection(run)
            self.last_active = time.monotonic()
            _log(
                f"run {pid}: {run.command} exited {code} after {time.monotonic() - run.started:.1f} s"
            )


def _hung_up(conn: socket.socket) -> bool:
    """Whether the caller has closed its end (it then runs the command itself)."""
    timeout = conn.gettimeout()
    conn.setblocking(False)  # with a timeout set, recv would wait for data first
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(timeout)


def _ignore(signum: int, _frame: FrameType | None) -> None:
    pass


def _peer_uid(conn: socket.socket) -> int:
    """The caller's user id (Linux); elsewhere the private folder is the only guard."""
    if not hasattr(socket, "SO_PEERCRED"):
        return os.getuid()
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _lock(path: Path) -> int | None:
    """An exclusive lock held for the server's lifetime; None if another server holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _listen(address: Path) -> Iterator[tuple[socket.socket, int]]:
    """Bind beside ``address`` and rename into place: a caller finds a socket only once it
    accepts. Yields the socket and the inode of its file."""
    tmp = address.with_name(f".{address.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(tmp))
        listener.listen(64)
        listener.setblocking(False)
        os.replace(tmp, address)
        yield listener, os.stat(address).st_ino
    finally:
        listener.close()
        tmp.unlink(missing_ok=True)


def _write_status(path: Path, key: str, address: Path, idle_s: float) -> dict[str, Any]:
    status = {"pid": os.getpid(), "key": key, "socket": str(address), "idle_s": idle_s,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.executable,
              "packages": protocol.package_roots(), "code": protocol.code_digest()}  # fmt: skip
    atomic_write_text(path, json.dumps(status, indent=2))
    return status


def _retire_stale_servers(folder: Path, mine: dict[str, Any]) -> None:
    """Stop the servers of this interpreter and project (``mine``: this server's status) whose
    code (source files, installed packages) is not what is on disk any more: no caller can match
    them again. Servers of other environments (e.g. other OpenMP settings) with today's code
    stay."""
    for other in protocol.read_statuses(folder):
        pid = int(other["pid"])
        same_project = all(other.get(k) == mine[k] for k in ("python", "packages"))
        if pid != os.getpid() and same_project and other.get("code") != mine["code"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _log(f"stopped server {pid}: its code is out of date")


def _remove_old_files(folder: Path, days: float = 7.0) -> None:
    """Locks and logs of servers that ended more than ``days`` ago (one pair per fingerprint
    ever served accumulates otherwise)."""
    cutoff = time.time() - days * 86400
    for lock in folder.glob("stage2-*.lock"):
        key = lock.stem.removeprefix("stage2-")
        log = protocol.log_path(folder, key)
        with contextlib.suppress(OSError):
            newest = max(lock.stat().st_mtime, log.stat().st_mtime if log.exists() else 0)
            if newest < cutoff and not protocol.is_serving(folder, key):
                log.unlink(missing_ok=True)
                lock.unlink()


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _log(message: str) -> None:
    """The server's log is its stderr (a file under the server folder)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", file=sys.stderr, flush=True)
