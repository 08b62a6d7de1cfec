"""How long a stage 2 rerun takes after a full run, and how much of it is trials, in one run.

    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun
    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun --dataset full-csv

On the 1,847 real ISIC JPEGs from ../shared with Lite0 (shared weights), or with ``full-csv`` on
the whole real competition train.csv (33,126 images, 2,056 patients; metadata and patient
features only, no images: the full-scale shape of a trial): (1) the full ``./run_all.sh``
(stage 1 + stage 2, 20 trials per model), starting from an empty output folder (the ONNX export
of the backbone stays cached in ~/.cache); then, ``--rounds`` times, side by side: (2)
``./run_all.sh --stage 2 --trials 0`` (refit only: fold features and refits come from the stage
2 cache) and (3) ``--stage 2 --trials 20``. Every run is a fresh ``./run_all.sh`` process timed
from outside; the time in trials comes from the Optuna studies' timestamps.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, REPO, WEIGHTS, isic_jpeg_layout, machine, require_shared

REUSED = re.compile(r"refits-\w+ reused")


def run(args: list[str]) -> tuple[float, str]:
    """Seconds of one ``./run_all.sh`` process, and its stderr."""
    started = time.perf_counter()
    result = subprocess.run(["./run_all.sh", *args], cwd=REPO, check=True, capture_output=True,
                            text=True)  # fmt: skip
    return time.perf_counter() - started, result.stderr


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-rerun"))
    parser.add_argument("--dataset", choices=("jpegs", "full-csv"), default="jpegs")
    parser.add_argument("--rounds", type=int, default=2, help="repeats of the reruns")
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
    rows = []
    since = time.time()
    full, _ = run(base)
    rows.append(("full `./run_all.sh` (stage 1 + 20 trials per model)", full,
                 trial_seconds(storage, since), ""))  # fmt: skip
    for _ in range(args.rounds):
        for trials in (0, 20):
            since = time.time()
            seconds, stderr = run([*base, "--stage", "2", "--trials", str(trials)])
            reused = f"{len(REUSED.findall(stderr))}/2"
            rows.append((f"`--stage 2 --trials {trials}`", seconds, trial_seconds(storage, since),
                         reused))  # fmt: skip
    print("| run | wall time | in trials | share of the full run | refits reused |")
    print("| --- | --- | --- | --- | --- |")
    for label, seconds, trials, reused in rows:
        print(f"| {label} | {seconds:.1f} s | {trials:.1f} s ({trials / seconds:.0%}) | "
              f"{seconds / full:.0%} | {reused} |")  # fmt: skip


if __name__ == "__main__":
    main()
