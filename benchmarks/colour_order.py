"""Colour-order verdicts on the real shared data: every image judged, and the 200-image sample
stage 1 judges, with the seconds each takes.

    .venv/bin/python benchmarks/colour_order.py --work /tmp/melanoma-colour

Sources: the 1,847 ISIC 2020 JPEGs and the two TFRecord shards (red and blue swapped), the
HAM10000 half and lesions folders (natural), and a folder of 400 HAM images of which every
other one was written with red and blue swapped (mixed: auto must refuse it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, ISIC, SHARED, machine, require_shared
from stage1_embed.colour import SAMPLE, judge_source
from stage1_embed.sources import create_source

LESIONS = SHARED / "data" / "ham10000_lesions"


def mixed_folder(root: Path, n: int = 400) -> Path:
    folder = root / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted((HAM / "jpeg" / "train").glob("*.jpg"))[:n]):
        target = folder / path.name
        if not target.exists():
            pixels = np.asarray(Image.open(path).convert("RGB"))
            Image.fromarray(pixels[..., ::-1] if i % 2 else pixels).save(target, quality=95)
    return folder


def sources(work: Path) -> list[tuple[str, Path, str, set[str]]]:
    isic_names = set(pd.read_csv(ISIC / "csv" / "train.csv")["image_name"])
    return [
        ("ISIC 2020 JPEGs (swapped)", ISIC / "jpeg" / "train_512", "jpeg", isic_names),
        ("ISIC 2020 TFRecords (swapped)", ISIC / "tfrecord", "tfrecord", isic_names),
        ("HAM10000 half", HAM / "jpeg" / "train", "jpeg",
         set(pd.read_csv(HAM / "train.csv")["image_name"])),
        ("HAM10000 lesions", LESIONS / "jpeg" / "train", "jpeg",
         set(pd.read_csv(LESIONS / "train.csv")["image_name"])),
        ("HAM, every other image swapped", mixed_folder(work), "jpeg",
         {p.stem for p in mixed_folder(work).glob("*.jpg")}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-colour"))
    args = parser.parse_args()
    require_shared(ISIC)
    print(f"machine: {machine()}")
    print(
        "| source | images | blue-dominant share (all) | verdict (all) | s (all) "
        f"| verdict ({SAMPLE}-image sample) | s (sample) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, root, fmt, names in sources(args.work):
        source = create_source(root, root, fmt)
        refs = list(source.index({"train": names}).values())
        started = time.perf_counter()
        every = judge_source(source, refs, sample=None)
        all_seconds = time.perf_counter() - started
        started = time.perf_counter()
        sampled = judge_source(source, refs)
        sample_seconds = time.perf_counter() - started
        share = f"{every.blue_share:.1%}" if every.blue_share is not None else "-"
        print(f"| {label} | {len(refs)} | {share} | {every.verdict} | {all_seconds:.1f} "
              f"| {sampled.verdict} | {sample_seconds:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
