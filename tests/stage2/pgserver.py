"""Test helper: a throwaway local PostgreSQL server for the shared-study tests.

It uses the PostgreSQL binaries already installed (``initdb``, ``pg_ctl``; Debian:
``apt-get install postgresql``), creates a cluster in ``--dir`` on first use with a generated
password (kept in ``DIR/melanoma-url.txt``, mode 600), listens on 127.0.0.1 (``--listen`` for
other machines) and a unix socket inside ``DIR``. As root the server runs as the ``postgres`` user,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stage2_boost.errors import ConfigError

USER = "melanoma"
DATABASE = "optuna"
URL_FILE = "melanoma-url.txt"
_CLUSTER = "cluster"  # the data directory inside --dir


@dataclass(frozen=True)
class LocalPostgres:
    """A running server started by :func:`start_server`."""

    folder: Path
    port: int
    password: str
    host: str = "127.0.0.1"

    def url(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) for ``--storage``."""
        return f"postgresql+psycopg://{USER}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL."""
        _run(self.folder, [_binary("psql"), "-h", str(self.folder), "-p", str(self.port),
                           "-U", USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                           "-c", f'CREATE DATABASE "{name}"'])  # fmt: skip
        return self.url(name)


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's layout)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def start_server(folder: Path, port: int | None = None, listen: str = "127.0.0.1") -> LocalPostgres:
    """Create the cluster in ``folder`` if needed, start it, and return how to reach it."""
    folder = Path(folder).resolve()
    cluster = folder / _CLUSTER
    previous_port = None
    if not (cluster / "PG_VERSION").is_file():
        password = _init_cluster(folder)
    else:
        url, password = _read_url_file(folder)
        previous_port = int(url.rsplit(":", 1)[1].split("/")[0])
    port = port or (previous_port if previous_port and _port_free(previous_port) else _free_port())
    status = _pg_ctl(folder, "status", check=False)
    if status.returncode == 0:
        raise ConfigError(
            f"A PostgreSQL server is already running on {cluster}; its URL is in "
            f"{folder / URL_FILE}. Stop it first: stop_server({folder})"
        )
    options = f"-c listen_addresses={listen} -c port={port} -c unix_socket_directories={folder}"
    _pg_ctl(folder, "start", "-w", "-t", "60", "-l", str(folder / "server.log"), "-o", options)
    server = LocalPostgres(
        folder, port, password, "127.0.0.1" if listen in ("*", "0.0.0.0") else listen
    )
    _write_url_file(folder, server)
    try:
        server.create_database(DATABASE)
    except ConfigError as err:
        if "already exists" not in str(err):
            raise
    return server


def stop_server(folder: Path) -> None:
    """Stop the server of ``folder`` (fast shutdown: open transactions are rolled back)."""
    folder = Path(folder).resolve()
    if not (folder / _CLUSTER / "PG_VERSION").is_file():
        raise ConfigError(f"{folder} holds no PostgreSQL cluster made by start_server().")
    if _pg_ctl(folder, "status", check=False).returncode != 0:
        raise ConfigError(f"No PostgreSQL server is running for {folder}: nothing to stop.")
    _pg_ctl(folder, "stop", "-m", "fast", "-w", "-t", "60")


def _init_cluster(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    pwfile = folder / "initdb.pw"
    pwfile.write_text(password + "\n")
    _hand_to_server_user(folder)
    try:
        _run(folder, [str(_binaries() / "initdb"), "-D", str(folder / _CLUSTER), "-U", USER,
                      f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                      "-E", "UTF8", "--no-instructions"])  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    return password


def _pg_ctl(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(_binaries() / "pg_ctl"), "-D", str(folder / _CLUSTER), *args]
    return _run(folder, command, check=check)


def _run(folder: Path, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if check and done.returncode != 0:
        log = folder / "server.log"
        tail = log.read_text(errors="replace")[-600:] if log.is_file() else ""
        raise ConfigError(
            f"`{' '.join(command[-6:])}` failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-600:]} {tail}".strip()
        )
    return done


def _hand_to_server_user(folder: Path) -> None:
    """As root, the cluster belongs to ``postgres``, which must be able to reach it."""
    if os.geteuid() != 0:
        return
    shutil.chown(folder, "postgres", "postgres")
    folder.chmod(0o700)
    for parent in folder.parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise ConfigError(
                f"The postgres user cannot reach {folder}: {parent} is not searchable by others. "
                "Choose a --dir outside private folders (e.g. under /srv or /tmp)."
            )


def _binaries() -> Path:
    found = find_binaries()
    if found is None:
        raise ConfigError(
            "No PostgreSQL server binaries (initdb, pg_ctl) found on PATH or in "
            "/usr/lib/postgresql/*/bin. Install them, e.g. `apt-get install postgresql`."
        )
    return found


def _binary(name: str) -> str:
    path = _binaries() / name
    return str(path) if path.exists() else name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_url_file(folder: Path, server: LocalPostgres) -> None:
    path = folder / URL_FILE
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(f"{server.url()}\n{server.password}\n")


def _read_url_file(folder: Path) -> tuple[str, str]:
    path = folder / URL_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the cluster in {folder} was not made by this tool.")
    url, password = path.read_text().split("\n")[:2]
    return url, password
