"""Adversarial validation on the real shared data: the ISIC 2020 JPEGs against the HAM10000
half (two sources: a model should tell them apart), and a random patient split of the HAM half
(one source: about 0.5), each on metadata, on Lite0 embeddings and on both.

    .venv/bin/python benchmarks/shift_check.py --work /tmp/melanoma-shift
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, WEIGHTS, isic_jpeg_layout, machine
from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1

LITE0 = (f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}",)


def random_split_of_ham(root: Path, seed: int = 0) -> Path:
    """The HAM half as train.csv + test.csv, its patients split at random (same images)."""
    table = pd.read_csv(HAM / "train.csv")
    rng = np.random.default_rng(seed)
    half = {p: rng.random() < 0.5 for p in table["patient_id"].unique()}
    test = table["patient_id"].map(half)
    root.mkdir(parents=True, exist_ok=True)
    table[~test].to_csv(root / "train.csv", index=False)
    table[test].drop(columns=["target"]).to_csv(root / "test.csv", index=False)
    return root


def rows(label: str, result: dict) -> list[str]:
    found = result["shift"][label]
    return [f"| {label} | {side} | {found[side]['auc']:.3f} [{found[side]['ci95'][0]:.3f}, "
            f"{found[side]['ci95'][1]:.3f}] | {'yes' if found[side]['warning'] else 'no'} |"
            for side in ("metadata", "images", "metadata + images") if side in found]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-shift"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    lines = [
        "| comparison | told apart from | AUC [95% CI] | warning |",
        "| --- | --- | --- | --- |",
    ]
    isic = isic_jpeg_layout(args.work / "isic")
    config = Stage1Config(data_dir=isic, out_dir=args.work / "isic-out", backbones=LITE0,
                          extra_data=(HAM,), progress=False)  # fmt: skip
    run_stage1(config)
    started = time.perf_counter()
    lines += rows("main vs ham10000_half", run_check(config))
    seconds = time.perf_counter() - started
    split = random_split_of_ham(args.work / "ham-split")
    config = Stage1Config(data_dir=split, images_dir=HAM / "jpeg" / "train",
                          out_dir=args.work / "ham-split-out", backbones=LITE0, progress=False)  # fmt: skip
    run_stage1(config)
    lines += rows("train vs test", run_check(config))
    print("\n".join(lines))
    print(f"(the ISIC + HAM check, {1847 + 3008} images: {seconds:.1f} s)")


if __name__ == "__main__":
    main()
