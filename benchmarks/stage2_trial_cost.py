"""Stage 2 speed: seconds per Optuna trial against the bare cost of the same LightGBM fits outside
Optuna, side by side, on (a) the full real train.csv metadata and (b) 33k rows x (metadata + 3
backbones x 64 PCA dims); plus what rebuilding the LightGBM Datasets in every trial would cost.

    .venv/bin/python benchmarks/stage2_trial_cost.py --trials 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.folds import make_folds
from stage1_embed.pipeline import run_stage1
from stage2_boost.boosters import LightGBMAdapter
from stage2_boost.cv import prepare_folds
from stage2_boost.data import load_stage_data
from stage2_boost.features import create_feature_groups
from stage2_boost.tune import make_objective


def real_metadata(tmp: Path):
    csv = require_shared(ISIC / "csv" / "train.csv")
    run_stage1(
        Stage1Config(data_dir=tmp, train_csv=csv, out_dir=tmp / "out", backbones=(), progress=False)
    )
    return load_stage_data(tmp / "out", None)


def with_synthetic_embeddings(data, n_backbones: int = 3, width: int = 1280):
    rng = np.random.default_rng(0)
    target = data.frame["target"].to_numpy(dtype=float, na_value=0)
    for i in range(n_backbones):
        vectors = rng.normal(0, 1, (len(data.frame), width)).astype(np.float32)
        vectors[:, :8] += 0.5 * target[:, None]
        data.embeddings[f"bb{i}"] = vectors
    return data


def measure(name: str, data, groups: list[str], n_trials: int) -> None:
    rows = data.split_index("train")
    folds = make_folds(data.frame.iloc[rows], 5, 42)
    backbones = sorted(data.embeddings)
    started = time.perf_counter()
    prepared = prepare_folds(
        data, rows, folds, lambda: create_feature_groups(groups, backbones, "pca", 64, 0), 42
    )
    t_features = time.perf_counter() - started
    adapter = LightGBMAdapter(
        seed=0, max_rounds=2000, early_stopping=100, n_rows=len(prepared[0].fit_rows)
    )
    started = time.perf_counter()
    for fold in prepared:
        fold.native(adapter)
    t_datasets = time.perf_counter() - started
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.NopPruner())  # fmt: skip
    started = time.perf_counter()
    study.optimize(make_objective(adapter, prepared, {"groups": groups}), n_trials=n_trials)
    per_trial = (time.perf_counter() - started) / n_trials
    started = time.perf_counter()
    for trial in study.trials:  # the same fits, no Optuna, no CV wrapper
        for fold in prepared:
            fit, stop, _ = fold.prepared[("lgbm", False, adapter.search_bins)]
            full = {"objective": "binary", "metric": "auc", "verbosity": -1, "seed": 0, "bagging_freq": 1,
                    "deterministic": True, "force_row_wise": True, "max_bin": 255, "feature_pre_filter": False,
                    "num_threads": 0, **trial.params}  # fmt: skip
            booster = lgb.train(
                full,
                fit,
                2000,
                valid_sets=[stop],
                callbacks=[lgb.early_stopping(100, verbose=False)],
            )
            booster.predict(fold.X_valid, num_iteration=booster.best_iteration)
    bare = (time.perf_counter() - started) / n_trials
    print(f"{name}: {len(rows)} rows x {prepared[0].X_fit.shape[1]} features; features {t_features:.1f} s and "
          f"Datasets {t_datasets:.1f} s, built once for all trials")  # fmt: skip
    print(f"  seconds per trial (5 folds): optuna {per_trial:.2f}, bare LightGBM {bare:.2f}, ratio {per_trial / bare:.2f};"
          f" rebuilding Datasets per trial would add {t_datasets:.1f} s ({t_datasets / per_trial:.0%})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = real_metadata(Path(tmp))
        measure(
            "(a) real train.csv, metadata + patient", data, ["metadata", "patient"], args.trials
        )
        data = with_synthetic_embeddings(data)
        measure(
            "(b) + 3 backbones x 64 PCA dims",
            data,
            ["metadata", "patient", "embedding"],
            args.trials,
        )
        measure(
            "(c) + a linear probe per backbone",
            data,
            ["metadata", "patient", "embedding", "probe"],
            args.trials,
        )


if __name__ == "__main__":
    main()
