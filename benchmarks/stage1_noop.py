"""What stage 1 pays on a rerun to know that nothing changed, at full scale, side by side.

    .venv/bin/python benchmarks/stage1_noop.py --work /tmp/melanoma-noop [--images 33126]

Builds a Kaggle-layout folder of ``--images`` distinct files (hard links to the 1,847 shared ISIC
JPEGs under new names, with their CSV rows), then times the scan that decides what is up to
date: (1) without content digests (index + header probe only: names and sizes, what the
digest covered before); (2) the first scan with digests (every file read and hashed; the
files are in the page cache here, so this is the CPU's sha256 speed, a cold disk is slower);
(3) a no-op rerun (digests remembered with size, mtime, ctime and inode: one stat per file);
(4) a rerun after one file was replaced (that file hashed again).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, machine, require_shared
from stage1_embed import scan as scan_module
from stage1_embed.content import STATE_FILE
from stage1_embed.metadata import load_metadata
from stage1_embed.scan import scan_dataset
from stage1_embed.sources import create_source


def build(root: Path, n_images: int) -> Path:
    source = sorted(require_shared(ISIC / "jpeg" / "train_512").glob("*.jpg"))
    train = pd.read_csv(ISIC / "csv" / "train.csv").set_index("image_name")
    folder = root / "jpeg" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        path = source[i % len(source)]
        name = f"{path.stem}_{i // len(source)}"
        target = folder / f"{name}.jpg"
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:  # another file system: a copy
                shutil.copyfile(path, target)
        rows.append({**train.loc[path.stem].to_dict(), "image_name": name})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def timed(label: str, action) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return label, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-noop"))
    parser.add_argument("--images", type=int, default=33_126)
    args = parser.parse_args()
    data = build(args.work / "data", args.images)
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    table = load_metadata(data / "train.csv", None)
    source = create_source(data)
    print(f"machine: {machine()}; {len(table)} images")
    original = scan_module.content_digests
    scan_module.content_digests = lambda *a, **k: {}  # type: ignore[assignment]
    rows = [timed("scan without content digests (names and sizes only)",
                  lambda: scan_dataset(table, source, out=out))]  # fmt: skip
    scan_module.content_digests = original
    rows.append(timed("first scan with digests (every file hashed)",
                      lambda: scan_dataset(table, source, out=out)))  # fmt: skip
    rows.append(timed("no-op rerun (digests remembered by stat)",
                      lambda: scan_dataset(table, source, out=out)))  # fmt: skip
    changed = next((data / "jpeg" / "train").glob("*.jpg"))
    body = changed.read_bytes()
    changed.unlink()  # a new file (the hard link is not written through)
    changed.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    rows.append(timed("rerun after one file changed", lambda: scan_dataset(table, source, out=out)))
    base = rows[0][1]
    print(f"remembered digests: {(out / STATE_FILE).stat().st_size / 1e6:.1f} MB")
    print("| scan | seconds | vs. names and sizes only |")
    print("| --- | --- | --- |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
