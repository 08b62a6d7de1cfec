"""Content digests remembered by file stat, and git's racily-clean rule (issue 30, item 5)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from stage1_embed import content
from stage1_embed.sources import create_source


def _digest_of(tiny_dataset: Path, tmp_path: Path) -> tuple[dict, Path]:
    source = create_source(tiny_dataset, image_format="jpeg")
    refs = source.index({"train": {"IMG_0000"}})
    path = tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg"
    return content.content_digests(source, refs, tmp_path), path


def test_a_rewrite_within_the_hashing_tick_is_hashed_again(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg"
    future = time.time_ns() + 10**9  # the file's timestamp is not older than the state's
    os.utime(path, ns=(future, future))
    first, _ = _digest_of(tiny_dataset, tmp_path)
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    real_stat = os.stat
    target = str(path.resolve())

    def stat(p: object, **kw: object) -> object:  # the rewritten file, every field as before
        now = real_stat(p, **kw)  # type: ignore[arg-type]
        return before if str(p) == target else now

    monkeypatch.setattr(content.os, "stat", stat)
    second, _ = _digest_of(tiny_dataset, tmp_path)  # every stat field as when it was hashed
    assert second[("train", "IMG_0000")] == hashlib.sha256(bytes(data)).hexdigest()
    assert second != first


def test_a_settled_file_is_not_read_again(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg"
    past = time.time_ns() - 10**10
    os.utime(path, ns=(past, past))
    first, _ = _digest_of(tiny_dataset, tmp_path)
    monkeypatch.setattr(content, "_digest", lambda *a: pytest.fail("hashed a settled file"))
    assert _digest_of(tiny_dataset, tmp_path)[0] == first
