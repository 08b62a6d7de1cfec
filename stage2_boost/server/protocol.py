"""What the stage 2 client and server share: the fingerprint, where servers listen, the messages.

Standard library only, and nothing heavy: the client imports this module on every call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stage1_embed.errors import MelanomaStackError

MODE_ENV = "MELANOMA_STAGE2_SERVER"  # auto (default) | on | off
DIR_ENV = "MELANOMA_STAGE2_SERVER_DIR"  # where the sockets, status files and logs live
IDLE_ENV = "MELANOMA_STAGE2_SERVER_IDLE"  # seconds without runs before a server stops
MODES = ("auto", "on", "off")
DEFAULT_IDLE_S = 900
SERVED_COMMANDS = frozenset({"train", "predict", "inspect", "runs"})
PACKAGES = ("stage2_boost", "stage1_embed")

# Environment variables that libraries read when they load (OpenMP and BLAS thread pools, the
# allocator, locale, matplotlib's configuration, Python's own settings): a server loaded under
# other values would run differently, so they are part of the fingerprint. Everything else in the
# caller's environment is simply handed to the run.
_LOAD_TIME_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "BLIS_", "VECLIB_",
                       "NUMEXPR_", "NPY_", "NUMPY_", "SCIPY_", "SKLEARN_", "JOBLIB_", "PYTHON",
                       "LD_", "MALLOC_", "ARROW_", "MPL", "MATPLOTLIB", "TQDM_", "OPTUNA_",
                       "SQLALCHEMY_", "LIGHTGBM_", "XGBOOST_", "LC_", "CUDA_", "SLURM_JOB",
                       "PBS_JOB", "LSB_JOB")  # fmt: skip
_LOAD_TIME_NAMES = ("HOME", "LANG", "LANGUAGE", "TZ", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")

_LENGTH = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class ServerUnavailable(MelanomaStackError):
    """No server can take this command. A stage 2 command then simply runs in its own process
    (no message); ``server start`` reports the reason (e.g. a folder others can write to)."""


def mode() -> str:
    """``MELANOMA_STAGE2_SERVER``: auto (use a server; start one after an interactive train),
    on (also start one without a terminal), off (never)."""
    value = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)} (got {value!r})")
    return value


def idle_seconds() -> float:
    value = os.environ.get(IDLE_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_IDLE_S
    except ValueError:
        raise ValueError(f"{IDLE_ENV} must be a number of seconds (got {value!r})") from None
    if seconds <= 0:
        raise ValueError(f"{IDLE_ENV} must be positive (got {value!r})")
    return seconds


def server_dir() -> Path:
    """Per-user folder of the servers' sockets: ``$MELANOMA_STAGE2_SERVER_DIR``, else
    ``$XDG_RUNTIME_DIR/melanoma-stack``, else ``$TMPDIR/melanoma-stack-<uid>``."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "melanoma-stack"
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"melanoma-stack-{os.getuid()}"


def ensure_private_dir(folder: Path) -> Path:
    """Create ``folder`` (mode 0700) or check an existing one: owned by this user, a real folder,
    not writable by others. Anyone who can write there could impersonate a server."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as err:
        raise ServerUnavailable(f"cannot create {folder}: {err.strerror}") from err
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise ServerUnavailable(f"{folder} is not a folder")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ServerUnavailable(
            f"{folder} must belong to this user and be private (chmod 700 {folder})"
        )
    return folder


def fingerprint(environ: Mapping[str, str] | None = None) -> str:
    """Everything a preloaded process depends on that a fresh one would read at start-up: the
    code (``code_digest``), the load-time environment and what the system lets the process do.

    ``environ``: the environment to describe (default: this process's). Take it before the heavy
    imports: some set variables themselves (scikit-learn sets ``KMP_*``)."""
    environ = os.environ if environ is None else environ
    described: dict[str, Any] = {
        "code": code_digest(),
        "python": [list(sys.flags), sys.warnoptions, sys._xoptions],
        "env": {k: v for k, v in environ.items() if _read_at_load(k)},
        "process": _process(),
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def code_digest() -> str:
    """The interpreter, the installed packages (their folders' modification times change on
    every install) and the project's source files. A server whose code digest differs from the
    files on disk can never serve anyone again."""
    # sys.path[0] is the caller's working directory (python -m) or script folder; the project's
    # own packages are located explicitly below
    described = [sys.executable, sys.version, [(entry, _mtime(entry)) for entry in sys.path[1:]]]
    digest = hashlib.sha256(json.dumps(described).encode())
    for root in package_roots():
        digest.update(f"{root}\n".encode())
        for path, size, mtime in _sources(root):
            digest.update(f"{path}:{size}:{mtime}\n".encode())
    return digest.hexdigest()[:20]


def package_roots() -> list[str]:
    roots = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ServerUnavailable(f"package {name} not found")
        roots.append(os.path.realpath(next(iter(spec.submodule_search_locations))))
    return roots


def _sources(root: str) -> list[tuple[str, int, int]]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                found.append((os.path.join(folder, name), info.st_size, info.st_mtime_ns))
    return found


def _cpus() -> list[int]:
    """The CPUs this process may run on (taskset, a batch job's allocation)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux
    return sorted(affinity(0)) if affinity else [os.cpu_count() or 0]


def _process() -> list[Any]:
    """Who the process is and what the system lets it do: a run must not escape the caller's
    user and groups, CPUs, priority, resource limits, cgroup (a batch job) or namespaces."""
    return [os.getuid(), os.getgid(), os.getgroups(), _cpus(), os.nice(0), _limits(),
            _read("/proc/self/cgroup"), _namespaces()]  # fmt: skip


def _limits() -> list[Any]:
    """Resource limits (ulimit): a run must not escape the caller's."""
    import resource

    names = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_CPU", "RLIMIT_NOFILE",
             "RLIMIT_NPROC", "RLIMIT_STACK", "RLIMIT_FSIZE", "RLIMIT_CORE")  # fmt: skip
    return [resource.getrlimit(getattr(resource, n)) for n in names if hasattr(resource, n)]


def _namespaces() -> list[str]:
    """Linux mount and pid namespaces: a container sharing the socket folder is elsewhere."""
    found = []
    for name in ("mnt", "pid"):
        try:
            found.append(os.readlink(f"/proc/self/ns/{name}"))
        except OSError:
            found.append("")
    return found


def _read_at_load(name: str) -> bool:
    return name in _LOAD_TIME_NAMES or name.startswith(_LOAD_TIME_PREFIXES)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def socket_path(folder: Path, key: str) -> Path:
    path = folder / f"stage2-{key}.sock"
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        raise ServerUnavailable(f"socket path too long for a Unix socket: {path}; set {DIR_ENV}")
    return path


def status_path(folder: Path, key: str) -> Path:
    return folder / f"stage2-{key}.json"


def lock_path(folder: Path, key: str) -> Path:
    return folder / f"stage2-{key}.lock"


def log_path(folder: Path, key: str) -> Path:
    return folder / f"stage2-{key}.log"


def is_serving(folder: Path, key: str) -> bool:
    """Whether a server holds the lock of ``key``: the proof that the pid in its status file is
    that server's and not a reused pid of some other process."""
    import fcntl

    try:
        fd = os.open(lock_path(folder, key), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this call took
    return False


def read_statuses(folder: Path) -> list[dict[str, Any]]:
    """The status files of the servers running in ``folder``; those of dead ones are removed."""
    found = []
    for path in sorted(folder.glob("stage2-*.json")):
        try:
            status = json.loads(path.read_text())
            key = str(status["key"])
        except (OSError, ValueError, KeyError):
            continue
        if is_serving(folder, key):
            found.append(status)
        else:
            path.unlink(missing_ok=True)
    return found


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return _LENGTH.pack(len(body)) + body


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        sock.sendall(data[sent:])
    else:
        sock.sendall(data)


class MessageReader:
    """Splits a stream into the length-prefixed JSON messages of ``encode``."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ValueError(f"message of {length} bytes")
            if len(self._buffer) < _LENGTH.size + length:
                break
            body = self._buffer[_LENGTH.size : _LENGTH.size + length]
            self._buffer = self._buffer[_LENGTH.size + length :]
            messages.append(json.loads(body))
        return messages


def receive_first(sock: socket.socket, max_fds: int) -> tuple[dict[str, Any], list[int]]:
    """The first message on ``sock`` and the file descriptors sent with it (blocking)."""
    reader, fds = MessageReader(), []
    while True:
        data, received, _flags, _addr = socket.recv_fds(sock, 65536, max_fds)
        fds += received
        if not data:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("closed before a whole message arrived")
        try:
            messages = reader.feed(data)
            if messages and not isinstance(messages[0], dict):
                raise ValueError(f"not a message: {messages[0]!r:.80}")
        except ValueError:
            for fd in fds:
                os.close(fd)
            raise
        if messages:
            return messages[0], fds
