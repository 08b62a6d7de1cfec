"""How long a stage 2 rerun takes after a full run, and how much of it is trials, in one run.

    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun
    .venv/bin/python benchmarks/stage2_rerun.py --work /tmp/melanoma-rerun --dataset full-csv

On the 1,847 real ISIC JPEGs from ../shared with Lite0 (shared weights), or with ``full-csv`` on
the whole real competition train.csv (33,126 images, 2,056 patients; metadata and patient
features only, no images: the full-scale shape of a trial): (1) the full ``./run_all.sh``
(stage 1 + stage 2, 20 trials per model), starting from an empty output folder (the ONNX export
of the backbone stays cached in ~/.cache); then, ``--rounds`` times, side by side: (2)
``./run_all.sh --stage 2 --trials 0`` (refit only: the fold features come from the fold cache)
and (3) ``--stage 2 --trials 20``, each once in a process of its own
(``MELANOMA_STAGE2_SERVER=off``) and once handed to the warm stage 2 server (started once, timed
on its own; a private server folder, stopped at the end). Every run is a fresh ``./run_all.sh``
process timed from outside; the time in trials comes from the Optuna studies' timestamps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, REPO, WEIGHTS, isic_jpeg_layout, machine, require_shared

SERVED = "run by the warm stage 2 server"


def run(args: list[str], env: dict[str, str], served: bool) -> tuple[float, str]:
    """Seconds of one ``./run_all.sh`` process, and its stderr; checks who ran stage 2."""
    started = time.perf_counter()
    result = subprocess.run(["./run_all.sh", *args], cwd=REPO, check=True, capture_output=True,
                            text=True, env=env)  # fmt: skip
    seconds = time.perf_counter() - started
    if (SERVED in result.stderr) != served:
        raise SystemExit(f"expected served={served}, stderr:\n{result.stderr[-3000:]}")
    return seconds, result.stderr


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


def start_server(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stage2_boost", "server", "start"], cwd=REPO,
                   check=True, capture_output=True, env=env)  # fmt: skip
    return time.perf_counter() - started


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
    server_dir = tempfile.mkdtemp(prefix="s2-bench-", dir="/tmp")  # short: a Unix socket path
    alone = {**os.environ, "MELANOMA_STAGE2_SERVER": "off"}
    served = {
        **os.environ,
        "MELANOMA_STAGE2_SERVER": "auto",
        "MELANOMA_STAGE2_SERVER_DIR": server_dir,
    }
    print(f"machine: {machine()}; dataset: {args.dataset}")
    rows = []
    since = time.time()
    full, _ = run(base, alone, served=False)
    rows.append(
        (
            "full `./run_all.sh` (stage 1 + 20 trials per model)",
            full,
            trial_seconds(storage, since),
            "",
        )
    )
    try:
        preload = start_server(served)
        for _ in range(args.rounds):
            for label, env, is_served in (
                ("own process", alone, False),
                ("warm server", served, True),
            ):
                for trials in (0, 20):
                    since = time.time()
                    seconds, stderr = run(
                        [*base, "--stage", "2", "--trials", str(trials)], env, is_served
                    )
                    reused = f"{stderr.count('refit reused')}/2"
                    rows.append((f"`--stage 2 --trials {trials}`, {label}", seconds,
                                 trial_seconds(storage, since), reused))  # fmt: skip
    finally:
        subprocess.run([sys.executable, "-m", "stage2_boost", "server", "stop"], cwd=REPO, env=served,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(server_dir, ignore_errors=True)
    print(f"warm server start-up (imports and warm-up, once): {preload:.1f} s")
    print("| run | wall time | in trials | share of the full run | refits reused |")
    print("| --- | --- | --- | --- | --- |")
    for label, seconds, trials, reused in rows:
        print(f"| {label} | {seconds:.1f} s | {trials:.1f} s ({trials / seconds:.0%}) | "
              f"{seconds / full:.0%} | {reused} |")  # fmt: skip


if __name__ == "__main__":
    main()
