"""Write files so that a reader sees either the old complete file or the new complete one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise OutputError(_describe_os_error(target, err)) from err
    tmp = Path(tmp_name)
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


def _describe_os_error(target: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        hint = "the disk is full: free space or choose another --out folder"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the folder is not writable: fix its permissions or choose another --out folder"
    else:
        hint = "check that the folder exists and is writable"
    return f"Cannot write {target}: {err.strerror or err}. {hint}. Previous outputs were left untouched."
