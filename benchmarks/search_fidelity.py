"""Cheaper trials at full scale: trials per hour and the final OOF AUC of the search as it was
(full-resolution histograms, pruning only after whole folds) against the multi-fidelity search
(coarser histograms for the tuning fits, and pruning on the first fold's early-stopping curve),
each given the same wall-clock budget, side by side in one run.

    .venv/bin/python benchmarks/search_fidelity.py --budget 300

Data: the real train.csv (33,126 rows, 2,056 patients) with metadata, patient features and three
random 1,280-d "backbones" with a weak planted signal, reduced by PCA to 64 dims each (203
features): the full-scale shape, as in stage2_trial_cost.py (no real embeddings exist here for all
33k images). Each search is a fresh study (TPE + median pruner, as stage 2 runs it); its best
parameters are then refitted at full resolution on the evaluation folds, as stage 2 reports them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine
from benchmarks.stage2_trial_cost import real_metadata, with_synthetic_embeddings
from stage1_embed.folds import EVAL_SEED_OFFSET, make_folds
from stage2_boost.boosters import create_booster
from stage2_boost.cv import cross_validate, oof_rows, prepare_folds
from stage2_boost.features import create_feature_groups
from stage2_boost.metrics import auc, bootstrap_auc_ci
from stage2_boost.tune import best_choice, make_objective, open_study, run_study

GROUPS = ["metadata", "patient", "embedding"]
SEARCHES = {  # label: (search bins, prune on rounds)
    "before: full bins, prune after folds": (None, False),
    "coarse bins (63) only": (63, False),
    "after: 63 bins + first-fold round pruning": (63, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300, help="seconds of search per setting")
    parser.add_argument("--model", default="lgbm", choices=["lgbm", "xgb"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = with_synthetic_embeddings(real_metadata(Path(tmp)))
        rows = data.split_index("train")
        backbones = sorted(data.embeddings)

        def groups() -> list:
            return create_feature_groups(GROUPS, backbones, "pca", 64, 0)

        train = data.frame.iloc[rows]
        tuning = prepare_folds(data, rows, make_folds(train, 5, 42), groups, 42)
        evaluation = prepare_folds(
            data, rows, make_folds(train, 5, 42 + EVAL_SEED_OFFSET), groups, 42 + EVAL_SEED_OFFSET
        )
        target = data.target[oof_rows(evaluation)]
        patients = data.frame["patient_id"].to_numpy()[oof_rows(evaluation)]
        print(f"{len(rows)} rows x {tuning[0].X_fit.shape[1]} features, {args.model}, "
              f"{args.budget:.0f} s of search per setting")  # fmt: skip
        print("| search | trials in budget (pruned) | trials per hour | best tuning AUC | "
              "final OOF AUC [95% CI] | refit |\n| --- | --- | --- | --- | --- | --- |")  # fmt: skip
        for label, (bins, prune_rounds) in SEARCHES.items():
            adapter = create_booster(args.model, seed=42, n_rows=len(tuning[0].fit_rows),
                                     search_bins=bins)  # fmt: skip
            for fold in tuning:  # native data built before the clock starts, as in a real run
                fold.native(adapter)
            name = f"fidelity.{args.model}.bins{bins or 'full'}-rounds{int(prune_rounds)}"
            study = open_study(optuna.storages.InMemoryStorage(), name, 42,
                               prune_rounds=prune_rounds)  # fmt: skip
            objective = make_objective(adapter, tuning, {"groups": GROUPS}, prune_rounds)
            started = time.perf_counter()
            run_study(study, objective, 10_000, args.budget)
            seconds = time.perf_counter() - started
            states = [t.state for t in study.trials]
            done = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                       for s in states)  # fmt: skip
            pruned = sum(s == optuna.trial.TrialState.PRUNED for s in states)
            choice = best_choice(study, adapter)
            n_rounds = max(1, round(float(np.median(choice.best_iterations or [100]))))
            started = time.perf_counter()
            oof = cross_validate(adapter, evaluation, choice.params, n_rounds=n_rounds).oof
            refit = time.perf_counter() - started
            low, high = bootstrap_auc_ci(target, oof, patients, 1000, 42)
            print(f"| {label} | {done} ({pruned}) | {done / seconds * 3600:.0f} | "
                  f"{choice.tuning_auc:.4f} | **{auc(target, oof):.4f}** [{low:.4f}, {high:.4f}] | "
                  f"{refit:.0f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
