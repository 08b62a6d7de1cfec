"""Stage 2 on a busy machine: each run alone, beside one busy process and beside a second
identical run, side by side in one run; the full-scale trial also as the earlier default ran it
(one fold at a time, every core on it).

    .venv/bin/python benchmarks/under_load.py --work /tmp/melanoma-load [--rows trial,rerun,demo]

Rows: ``trial``: one LightGBM trial (5 folds, early stopping) at full scale, the real train.csv's
33,126 rows with metadata + patient features, in a fresh process; ``rerun``: ``./run_all.sh
--stage 2 --trials 20`` on the 1,847 shared JPEGs (Lite0) after stage 1; ``demo``: the demo's
whole ``./run_all.sh`` into a fresh folder. "Busy" is a single-threaded pure-Python loop started
in its own session; "second run" starts the same command twice at once (own output folders) and
reports the slower. Slowdowns are against "alone" in the same column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, REPO, WEIGHTS, isic_jpeg_layout, machine, require_shared

TRIAL = """
import os, sys, time
from pathlib import Path
from stage1_embed.folds import make_folds
from stage2_boost.boosters import LightGBMAdapter
from stage2_boost.cv import cross_validate, prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.features import create_feature_groups
old = sys.argv[2] == "old"
data = load_stage_data(Path(sys.argv[1]), None)
rows = data.split_index("train")
folds = prepare_folds(data, rows, make_folds(data.frame.iloc[rows], 5, 42),
                      lambda: create_feature_groups(["metadata", "patient"], [], "pca", 4, 0), 42)
adapter = LightGBMAdapter(seed=0, n_rows=len(folds[0].fit_rows), n_features=folds[0].X_fit.shape[1],
                          search_bins=63)
if old:  # the earlier default: one fold at a time, every core on it
    adapter.workers, adapter.threads = 1, os.cpu_count()
for fold in folds:
    fold.native(adapter)
started = time.perf_counter()
cross_validate(adapter, folds, adapter.default_params())
print(time.perf_counter() - started)
"""


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


def seconds(process: subprocess.Popen, started: float, inner: bool) -> float:
    """Wall time of a finished process, or (``inner``) the time it printed last."""
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{process.args} failed:\n{err[-3000:]}")
    return float(out.strip().splitlines()[-1]) if inner else time.perf_counter() - started


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def conditions(
    make: Callable[[int], list[str]], env: dict[str, str], inner: bool = False
) -> list[float]:
    """Alone; beside a busy process; the slower of two started together."""
    started = time.perf_counter()
    alone = seconds(start(make(0), env), started, inner)
    other = busy()
    try:
        started = time.perf_counter()
        beside_busy = seconds(start(make(1), env), started, inner)
    finally:
        other.kill()
        other.wait()
    started = time.perf_counter()
    pair = [start(make(i + 2), env) for i in range(2)]
    return [alone, beside_busy, max(seconds(p, started, inner) for p in pair)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-load"))
    parser.add_argument("--rows", default="trial,rerun,demo")
    args = parser.parse_args()
    cores = str(os.cpu_count() or 1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    python = sys.executable
    print(f"machine: {machine()}")
    print("| run | threads | alone | beside a busy process | beside a second identical run |")
    print("| --- | --- | --- | --- | --- |")
    rows = args.rows.split(",")
    if "trial" in rows:
        features = args.work / "full-csv"
        if not (features / "manifest.parquet").is_file():
            subprocess.run([python, "-m", "stage1_embed", "--data", str(args.work), "--train-csv",
                            str(require_shared(ISIC / "csv" / "train.csv")), "--out", str(features),
                            "--backbones", "none"], cwd=REPO, check=True, capture_output=True)  # fmt: skip
        for label, mode in (("folds side by side, a thread each (this release)", "new"),
                            (f"one fold at a time on all {cores} cores (before)", "old")):  # fmt: skip
            report("one LightGBM trial at full scale (33,126 rows)", label, conditions(
                lambda i, m=mode: [python, "-c", TRIAL, str(features), m], env, inner=True))  # fmt: skip
    if "rerun" in rows:
        data = isic_jpeg_layout(args.work / "isic")
        out = args.work / "isic-out"
        backbone = f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}"
        subprocess.run(["./run_all.sh", "--data", str(data), "--out", str(out), "--backbones",
                        backbone, "--stage", "1"], cwd=REPO, check=True, capture_output=True)  # fmt: skip

        def rerun(i: int) -> list[str]:
            return [python, "-m", "stage2_boost", "train", "--features", str(out), "--out",
                    str(args.work / f"stage2-{i}"), "--trials", "20"]  # fmt: skip

        report("stage 2, 20 trials per model, 1,847 JPEGs", "this release", conditions(rerun, env))
    if "demo" in rows:

        def demo(i: int) -> list[str]:
            out = args.work / f"demo-{i}"
            shutil.rmtree(out, ignore_errors=True)
            return ["./run_all.sh", "--out", str(out)]

        subprocess.run(demo(0), cwd=REPO, check=True, capture_output=True)  # data/demo, exports
        report("demo `./run_all.sh`", "this release", conditions(demo, env))


def report(what: str, label: str, seconds: list[float]) -> None:
    alone, beside_busy, second = seconds
    print(f"| {what} | {label} | {alone:.1f} s | {beside_busy:.1f} s ({beside_busy / alone:.1f}x) "
          f"| {second:.1f} s ({second / alone:.1f}x) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
