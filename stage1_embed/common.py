"""What both stages share and nothing else: the base errors, atomic writes, hashing, library
versions and the command lines' logging and exit codes.

Stage 2 depends on stage 1 for its contract (``schema``, ``folds``) and on this module; this module
imports nothing of either stage, so it stays free of torch, image code and the boosters.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


class MelanomaStackError(Exception):
    """Base class of every user-facing error; ``exit_code`` is what the CLI returns.

    The CLIs print its message (one paragraph: what is wrong, where, and how to fix it) and exit
    non-zero; anything else is a bug and keeps its traceback."""

    exit_code = 2


class ConfigError(MelanomaStackError):
    """A flag, backbone spec, storage URL or other setting is invalid."""


class OutputError(MelanomaStackError):
    """An output folder cannot be written, or is locked by another run."""


# --- atomic writes -------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The file is created with mode 0666 less the umask (the kernel applies it), as a plain
    ``open`` would, not mkstemp's private 0600, so a teammate can read what the run wrote."""
    target = Path(target)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise OutputError(_describe_os_error(target, err)) from err
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(_describe_os_error(target, err)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_folder(target: Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it becomes ``target``.

    A reader sees the old complete folder or the new complete one, never a half-written one. With
    ``replace`` an existing ``target`` is moved aside and removed; without it, a ``target`` that
    appeared meanwhile (another process wrote the same content) is kept and the staging dropped."""
    target = Path(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise OutputError(_describe_os_error(target, err)) from err
    try:
        yield staging
        old = None
        if target.exists() and replace:
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        with contextlib.suppress(OSError):  # only without replace: the other writer's is as good
            staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _describe_os_error(target: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        hint = "the disk is full: free space or choose another --out folder"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is not writable: fix its permissions or choose another --out folder"
    else:
        hint = "check that the folder exists and is writable"
    return f"Cannot write {target}: {err.strerror or err}. {hint}. Previous outputs were left untouched."


# --- hashing and versions ------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; Paths and other objects as text)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


SEAL = "manifest_sha256"  # a manifest's digest of its own content, without this key


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its own digest added, so an edit of any value in it can be detected."""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return {**body, SEAL: json_digest(body)}


def folder_integrity_problem(folder: Path, manifest: dict[str, Any], name: str) -> str | None:
    """What is wrong with a sealed folder (its manifest ``name`` edited, or a listed file missing,
    changed or truncated), in a sentence; None when everything is as it was written."""
    if manifest.get(SEAL) != seal(manifest)[SEAL]:
        return (f"{Path(folder) / name} has been edited since it was written (its content no longer "
                f"matches its {SEAL})")  # fmt: skip
    for relative, expected in manifest.get("files", {}).items():
        path = Path(folder) / relative
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
            return (
                f"{path} has changed since it was written (its size or sha256 differs from {name})"
            )
    return None


# What an image decoder, a CNN and a booster's results depend on besides the code: the versions
# of these libraries (where the project is not installed, its own dependency list is unknown).
CORE_LIBRARIES = ("torch", "torchvision", "timm", "onnxruntime", "onnx", "numpy", "pillow",
                  "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pyarrow", "pandas", "scipy",
                  "scikit-learn", "lightgbm", "xgboost", "optuna")  # fmt: skip


# the libraries that decode, preprocess and embed an image (stage 1's and the experts' keys)
IMAGE_LIBRARIES = ("torch", "torchvision", "timm", "onnxruntime", "onnx", "numpy", "pillow",
                   "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pyarrow")  # fmt: skip


def code_digest(*packages: str) -> str:
    """sha256 over the source of ``packages`` (the project's own, by folder): one policy for
    both stages' caches. A superset of what a computation imports (0.19 s for the import
    closure against 5 ms for this), so an unrelated edit costs one recomputation."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def project_dependencies() -> list[str]:
    """The distributions the installed project requires (its pyproject dependencies), or
    :data:`CORE_LIBRARIES` when it runs from a source tree that was never installed."""
    try:
        requires: Iterable[str] = metadata.requires("melanoma-stack") or []
    except metadata.PackageNotFoundError:
        return sorted(CORE_LIBRARIES)
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requires if "extra ==" not in r]  # type: ignore[union-attr]
    return sorted(set(names))


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names`` ('not installed' when absent), for provenance."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# --- cores ---------------------------------------------------------------------------------------


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity and its cgroup's CPU quota (a container,
    a SLURM job), not the machine's count. joblib (scikit-learn's) reads both."""
    from joblib import cpu_count

    return max(1, int(cpu_count()))


# --- fault injection ----------------------------------------------------------------------------

CRASH_VARIABLE = "MELANOMA_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Where the resume tests kill a run, deterministically: with ``MELANOMA_CRASH_AT=NAME:N``
    the process SIGKILLs itself the N-th time it passes ``crash_point(NAME)`` (after that piece
    of work was saved), instead of a test racing a running process with a signal."""
    wanted = os.environ.get(CRASH_VARIABLE)
    if not wanted or wanted.rpartition(":")[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(wanted.rpartition(":")[2]):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# --- command lines -------------------------------------------------------------------------------


def setup_logging(verbose: bool) -> None:
    """INFO from this project, warnings only from timm (which logs three lines per weights file
    loaded; stage 1 logs one line naming the weights and their sha256); ``verbose``: DEBUG."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        logging.getLogger("timm").setLevel(logging.WARNING)


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main``; a MelanomaStackError becomes one paragraph on stderr and a non-zero exit."""
    try:
        return main()
    except MelanomaStackError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is kept; rerun the same command to resume.", file=sys.stderr
        )
        return 130
