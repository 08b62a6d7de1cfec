"""Out-of-fold AUC against the number of tuning trials, each step paired with the untuned run.

    .venv/bin/python benchmarks/trials_curve.py --features data/out/demo --work /tmp/melanoma-trials

One study grows step by step (``--steps 0,10,20,40,80`` trials in all; step 0 is the libraries'
defaults, untuned, which a new study also tries first). After each step the chosen parameters are
refitted on the evaluation folds, as every run does, and ``compare`` pairs the step's blend with
the untuned one. The tuning AUC is the study's best CV score, which selection flatters.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine
from stage2_boost.compare import compare_evidence
from stage2_boost.config import Stage2Config
from stage2_boost.evidence import read_evidence
from stage2_boost.train import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=Path, required=True, help="a stage 1 output folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-trials"))
    parser.add_argument("--groups", help="comma-separated feature groups (default: the defaults)")
    parser.add_argument(
        "--steps", default="0,10,20,40,80", help="trials in the study after each step"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stage2 = args.work / args.features.name
    groups = tuple(args.groups.split(",")) if args.groups else None
    print(f"machine: {machine()}; {args.features} ({args.groups or 'default groups'}); "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(
        "| trials per model | tuning AUC (best) | OOF AUC [95% CI] | vs untuned: ΔAUC [paired 95% CI] | pAUC80 |"
    )
    print("| --- | --- | --- | --- | --- |")
    done, untuned = 0, None
    for step in (int(s) for s in args.steps.split(",")):
        config = Stage2Config(features_dir=args.features, out_dir=stage2, feature_groups=groups,
                              n_trials=step - done, report=False)  # fmt: skip
        metrics = run_training(config).metrics
        done = step
        evidence = read_evidence(stage2, metrics["run_id"])
        untuned = untuned or evidence
        delta = compare_evidence(untuned, evidence)
        low, high = metrics["oof_auc_ci95"]
        dlow, dhigh = delta["delta_auc_ci95"]
        tuning = f"{metrics['tuning_auc']:.4f}" if metrics["tuning_auc"] is not None else "untuned"
        pauc = metrics["oof_pauc80"]
        print(f"| {step} | {tuning} | {metrics['oof_auc']:.4f} [{low:.4f}, {high:.4f}] | "
              f"{delta['delta_auc']:+.4f} [{dlow:+.4f}, {dhigh:+.4f}] | "
              f"{'-' if pauc is None else f'{pauc:.4f}'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
