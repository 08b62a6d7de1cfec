"""What each image is, by content: the sha256 of its stored bytes, remembered by file stat.

Stage 1 decides what is up to date by these digests (a changed byte is a changed image), not by
names and sizes. Hashing 33k files on every run would cost a full read of the data, so, as DVC
does, each digest is remembered in ``OUT/content_hashes.parquet`` with its file's size, mtime,
ctime and inode, and recomputed only when one of those changed. The ctime is what DVC's check
lacks: a same-size replacement whose mtime was restored (``cp -p``, ``rsync -t``, ``touch -d``)
still changes it, since no user call can set it. And as git does for its index, a file whose
mtime is not older than the remembered state itself is hashed again ("racily clean"): it may
have been rewritten within the same timestamp tick as it was hashed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from .common import atomic_path
from .sources import ImageKey, ImageRef, ImageSource

logger = logging.getLogger(__name__)
STATE_FILE = "content_hashes.parquet"
_STAT = ("size", "mtime_ns", "ctime_ns", "inode")


def content_digests(
    source: ImageSource, refs: Mapping[ImageKey, ImageRef], out: Path | None, threads: int = 8
) -> dict[ImageKey, str]:
    """sha256 of each image's stored bytes (a TFRecord record's payload, a file's whole content),
    remembered in ``out`` (None: nothing remembered)."""
    state_path = Path(out) / STATE_FILE if out is not None else None
    known, written_ns = _read_state(state_path) if state_path is not None else ({}, 0)
    stats: dict[str, os.stat_result | None] = {}
    rows, todo = [], []
    for key, ref in refs.items():
        path = str((source.root / ref.relative_path).resolve())
        if path not in stats:
            try:
                stats[path] = os.stat(path)
            except OSError:  # vanished since the index: the read below reports it per image
                stats[path] = None
        stat = stats[path]
        where = (path, ref.offset, ref.length)
        signature = (
            (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino) if stat else None
        )
        remembered = known.get(where)
        settled = signature is not None and signature[1] < written_ns  # not racily clean
        if settled and remembered is not None and remembered[:4] == signature:
            rows.append((key, where, signature, remembered[4]))
        else:
            todo.append((key, ref, where, signature))
    with ThreadPoolExecutor(threads) as pool:
        for (key, _, where, signature), digest in zip(
            todo, pool.map(lambda item: _digest(source, item[1]), todo), strict=True
        ):
            if digest is not None and signature is not None:
                rows.append((key, where, signature, digest))
    if todo and state_path is not None:
        logger.info("content digests: %d image(s) hashed, %d remembered from %s",
                    len(todo), len(rows) - len(todo), state_path.name)  # fmt: skip
        _write_state(state_path, rows)
    return {key: digest for key, _, _, digest in rows}


def _digest(source: ImageSource, ref: ImageRef) -> str | None:
    try:
        return hashlib.sha256(source.read_bytes(ref)).hexdigest()
    except OSError:  # unreadable: the probe or the decoder records the error for this image
        return None


def _read_state(
    path: Path,
) -> tuple[dict[tuple[str, int, int], tuple[int, int, int, int, str]], int]:
    """The remembered digests, and when they were written (the state file's mtime)."""
    if not path.is_file():
        return {}, 0
    try:
        written_ns = path.stat().st_mtime_ns
        frame = pd.read_parquet(path)
        return {
            (p, int(o), int(n)): (int(s), int(m), int(c), int(i), str(d))
            for p, o, n, s, m, c, i, d in frame[
                ["path", "offset", "length", *_STAT, "sha256"]
            ].itertuples(index=False, name=None)
        }, written_ns
    except (OSError, ValueError, KeyError) as err:  # a damaged cache only costs a re-hash
        logger.warning("%s is unreadable (%s); hashing the images again", path, err)
        return {}, 0


def _write_state(path: Path, rows: list) -> None:
    frame = pd.DataFrame(
        [(*where, *signature, digest) for _, where, signature, digest in rows],
        columns=["path", "offset", "length", *_STAT, "sha256"],
    )
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
