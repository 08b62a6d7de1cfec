"""How long a stage 2 rerun takes after a full run, and how much of it is trials, in one run.

    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun
    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun --dataset full-csv

On the 1,847 real ISIC JPEGs from ../shared with Lite0 (shared weights), or with ``full-csv`` on
the whole real competition train.csv (33,126 images, 2,056 patients; metadata and patient
features only, no images: the full-scale shape of a trial): (1) the full
``./run_all.sh`` (stage 1 + stage 2, 20 trials per model); (2) ``./run_all.sh --stage 2 --trials 0``
(refit only: the fold features come from the fold cache); (3) ``--stage 2 --trials 20``. Each is
a fresh process, timed from outside, starting from an empty output folder (the ONNX export of
the backbone stays cached in ~/.cache); the time spent in trials comes from the Optuna studies'
timestamps. (4) The same 20-trial rerun in a warm Python session: ``run_training`` called again
in this process, after one ``--trials 0`` call has loaded the libraries (a notebook's reruns).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, REPO, WEIGHTS, isic_jpeg_layout, machine, require_shared


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(["./run_all.sh", *args], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def trial_seconds(storage: str, since: float) -> float:
    """Seconds spent inside trials that started after ``since`` (epoch seconds), all studies."""
    total = 0.0
    for summary in optuna.get_all_study_summaries(storage):
        for trial in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
            if (
                trial.datetime_start
                and trial.datetime_complete
                and trial.datetime_start.timestamp() >= since
            ):
                total += (trial.datetime_complete - trial.datetime_start).total_seconds()
    return total


def in_process(out: Path, storage: str) -> tuple[float, float]:
    """Seconds of a 20-trial rerun in this (warm) process, and of them in trials."""
    from stage2_boost.config import Stage2Config
    from stage2_boost.train import run_training

    run_training(Stage2Config(features_dir=out, n_trials=0))  # loads the libraries
    since, started = time.time(), time.perf_counter()
    run_training(Stage2Config(features_dir=out, n_trials=20))
    seconds = time.perf_counter() - started
    return seconds, trial_seconds(storage, since)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-rerun"))
    parser.add_argument("--dataset", choices=("jpegs", "full-csv"), default="jpegs")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.dataset == "jpegs":
        data = isic_jpeg_layout(args.work / "isic")
        backbones = f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}"
    else:
        data = args.work / "isic-csv"
        data.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(require_shared(ISIC / "csv" / "train.csv"), data / "train.csv")
        backbones = "none"
    out = args.work / f"out-{args.dataset}"
    shutil.rmtree(out, ignore_errors=True)  # the full run starts from nothing (stage 1 included)
    base = ["--data", str(data), "--out", str(out), "--backbones", backbones]
    storage = f"sqlite:///{(out / 'stage2' / 'optuna.db').resolve()}"
    print(f"machine: {machine()}; dataset: {args.dataset}")
    print("| run | wall time | in trials | share of the full run |\n| --- | --- | --- | --- |")
    rows = []
    for label, extra in (("full `./run_all.sh` (stage 1 + 20 trials per model)", []),
                         ("`--stage 2 --trials 0` (refit from the studies)", ["--stage", "2", "--trials", "0"]),
                         ("`--stage 2 --trials 20`", ["--stage", "2", "--trials", "20"])):  # fmt: skip
        since = time.time()
        seconds = run([*base, *extra])
        rows.append((label, seconds, trial_seconds(storage, since)))
    rows.append(
        ("`run_training` again in a warm Python session, 20 trials", *in_process(out, storage))
    )
    full = rows[0][1]
    for label, seconds, trials in rows:
        print(
            f"| {label} | {seconds:.0f} s | {trials:.0f} s ({trials / seconds:.0%}) | {seconds / full:.0%} |"
        )


if __name__ == "__main__":
    main()
