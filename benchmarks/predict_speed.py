"""Scoring new images with a saved model: one image from a cold process and from a warm one,
images per second for a batch, and the model folder's size and load time, in one run.

    .venv/bin/python benchmarks/predict_speed.py --work /tmp/melanoma-predict

The model is trained here on the synthetic demo (Lite0, default groups, 5 trials); the images
scored are real ISIC JPEGs from ../shared (512 px) when present, else the demo's test images.
"cold" = `./run_all.sh --model` in a new process (Python start, imports, weights, stage 1, predict);
"warm" = the same two stages called again inside one process that has scored before.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, REPO, machine
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage1_embed.scoring import model_backbones
from stage2_boost.config import Stage2Config
from stage2_boost.model.load import load_model
from stage2_boost.model.predict import run_predict
from stage2_boost.train import run_training


def train(work: Path) -> Path:
    model = work / "features" / "stage2" / "model"
    if (model / "model.json").is_file():
        return model
    demo = work / "demo"
    subprocess.run([sys.executable, "-m", "stage1_embed.demo", "--out", str(demo)], check=True)
    run_stage1(Stage1Config(data_dir=demo, out_dir=work / "features",
                            backbones=("tf_efficientnet_lite0",), progress=False))  # fmt: skip
    run_training(Stage2Config(features_dir=work / "features", n_trials=5, report=False))
    return model


def image_folder(work: Path, n: int) -> Path:
    """A bare folder of ``n`` images (real ISIC JPEGs when ../shared is there)."""
    folder = work / f"images{n}"
    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    source = ISIC / "jpeg" / "train_512"
    files = (
        sorted(source.glob("*.jpg"))
        if source.is_dir()
        else sorted((work / "demo" / "jpeg" / "test").glob("*.jpg"))
    )
    for path in files[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def score_in_process(model: Path, images: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    specs = tuple(b.spec for b in model_backbones(model))
    run_stage1(Stage1Config(data_dir=images, out_dir=out, backbones=specs, model_dir=model,
                            skip_missing=True, max_failures=10**9, progress=False))  # fmt: skip
    run_predict(model, out, out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-predict"))
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    model = train(args.work)
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    started = time.perf_counter()
    load_model(model)
    load_seconds = time.perf_counter() - started
    one, batch = image_folder(args.work, 1), image_folder(args.work, args.batch)
    started = time.perf_counter()
    subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(one), "--out",
                    str(args.work / "cold")], cwd=REPO, check=True, capture_output=True)  # fmt: skip
    cold = time.perf_counter() - started
    score_in_process(model, one, args.work / "warm")  # warms this process
    warm = min(score_in_process(model, one, args.work / "warm") for _ in range(3))
    batch_seconds = score_in_process(model, batch, args.work / "batch")
    n = len(pd.read_csv(args.work / "batch" / "predictions.csv"))
    print(f"machine: {machine()}")
    print("| what | result |\n| --- | --- |")
    print(
        f"| model folder (demo, Lite0, 5 folds x 2 boosters) | {size / 1024:.0f} KiB, loads and verifies in {load_seconds * 1000:.0f} ms |"
    )
    print(f"| one image, cold process (`./run_all.sh --model`) | {cold:.1f} s |")
    print(f"| one image, warm process (stage 1 + predict again) | {warm:.2f} s |")
    print(
        f"| batch of {n} images, warm process | {batch_seconds:.1f} s = {n / batch_seconds:.1f} img/s |"
    )


if __name__ == "__main__":
    main()
