"""Several tuning workers on one PostgreSQL study: trials per minute with 1, 2 and 4 workers, and
the time a trial spends in the storage, SQLite vs PostgreSQL, side by side in one run.

    .venv/bin/python benchmarks/shared_study.py --work /tmp/melanoma-shared --trials 16

Features: the synthetic demo (453 images) with the Lite0 embedding, groups metadata, patient,
embedding, probe, ugly-duckling; LightGBM only. Each worker is ``python -m stage2_boost train
--storage postgresql://... --threads cores/workers`` with its own --out; each worker count gets a
fresh database and adds ``--trials`` trials in all. Trials per minute come from the study's own timestamps (first trial
start to last trial end), so start-up and the final refit are not counted.
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

from stage2_boost.pgserver import start_server, stop_server

from benchmarks.common import REPO, machine
from stage2_boost.boosters import create_booster
from stage2_boost.tune import open_storage, open_study

WORKER_ARGS = ["--models", "lgbm", "--no-report", "--bootstrap", "200"]


def build_features(work: Path) -> Path:
    demo, features = work / "demo", work / "features"
    if not (demo / "train.csv").is_file():
        subprocess.run([sys.executable, "-m", "stage1_embed.demo", "--out", str(demo)], check=True)
    subprocess.run([sys.executable, "-m", "stage1_embed", "--data", str(demo), "--out",
                    str(features), "--backbones", "tf_efficientnet_lite0", "--no-progress"],
                   check=True, capture_output=True)  # fmt: skip
    return features


def trials_per_minute(url: str) -> tuple[float, int]:
    (summary,) = optuna.get_all_study_summaries(url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    return len(trials) / ((end - start).total_seconds() / 60), len(trials)


def workers(features: Path, work: Path, url: str, n: int, total: int) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "stage2_boost", "train", "--features",
                               str(features), "--out", str(work / f"w{n}-{i}"), "--storage", url,
                               "--trials", str(total // n), "--threads", str(max(1, (os.cpu_count() or 1) // n)),
                               *WORKER_ARGS], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(n)]  # fmt: skip
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"a worker failed (n={n}); rerun one by hand to see why")
    return time.perf_counter() - started


def storage_seconds_per_trial(url: str, n_trials: int = 40) -> float:
    """A trial that does only what ours does with the storage: suggest the LightGBM parameters,
    report five fold AUCs, set two user attributes, finish."""
    adapter = create_booster("lgbm", seed=0, max_rounds=100, early_stopping=10, n_rows=1000)
    study = open_study(open_storage(url), "storage-cost", seed=0)

    def objective(trial: optuna.Trial) -> float:
        adapter.suggest_params(trial)
        for fold in range(5):
            trial.report(0.5 + fold / 100, fold)
        trial.set_user_attr("fold_aucs", [0.5] * 5)
        trial.set_user_attr("best_iterations", [10] * 5)
        return 0.5

    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return (time.perf_counter() - started) / n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-shared"))
    parser.add_argument("--trials", type=int, default=16, help="trials per worker count, in all")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    features = build_features(args.work)
    folder = Path(tempfile.mkdtemp(prefix="melanoma-pg-"))
    folder.chmod(0o711)
    server = start_server(folder / "pg")
    try:
        print(f"machine: {machine()}")
        print(
            "| workers | trials | trials per minute (study timestamps) | wall time, all workers |"
        )
        print("| --- | --- | --- | --- |")
        for n in (1, 2, 4):
            url = server.create_database(f"workers{n}_{int(time.time())}")
            wall = workers(features, args.work, url, n, args.trials)
            rate, count = trials_per_minute(url)
            print(f"| {n} | {count} | {rate:.1f} | {wall:.0f} s |", flush=True)
        sqlite = f"sqlite:///{args.work / f'storage-{int(time.time())}.db'}"
        pg = server.create_database(f"storage_{int(time.time())}")
        print("\n| storage | seconds per trial in the storage (no model fitting) |")
        print("| --- | --- |")
        for label, url in (("SQLite file", sqlite), ("PostgreSQL 15, 127.0.0.1", pg)):
            print(f"| {label} | {storage_seconds_per_trial(url) * 1000:.1f} ms |", flush=True)
    finally:
        stop_server(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
