"""A paired comparison against each run's own interval, on the real train.csv (no images).

    .venv/bin/python benchmarks/paired_compare.py --work /tmp/melanoma-compare --trials 20
    .venv/bin/python benchmarks/paired_compare.py --features FEATURES --groups GROUPS_A GROUPS_B

Trains ``--groups metadata`` and then ``--groups metadata,patient`` into one stage 2 folder (so
both share rows, labels and evaluation folds), then runs ``compare`` between them: the paired
patient-bootstrap interval of the difference against the width of each run's own interval.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ISIC, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage2_boost.compare import compare_evidence, format_comparison
from stage2_boost.config import Stage2Config
from stage2_boost.evidence import read_evidence
from stage2_boost.train import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-compare"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--features", type=Path,
                        help="a stage 1 output folder (default: the real train.csv, no images)")  # fmt: skip
    parser.add_argument("--groups", nargs=2, default=["metadata", "metadata,patient"],
                        help="the feature groups of run A and run B")  # fmt: skip
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    features = args.features or args.work / "features"
    if not (features / "manifest.parquet").is_file():
        run_stage1(Stage1Config(data_dir=args.work, out_dir=features, backbones=(),
                                train_csv=require_shared(ISIC / "csv" / "train.csv"),
                                progress=False))  # fmt: skip
    print(f"machine: {machine()}; {args.trials} trials per model; {time.strftime('%Y-%m-%d')}")
    runs = []
    for groups in args.groups:
        config = Stage2Config(features_dir=features, out_dir=args.work / "stage2",
                              feature_groups=tuple(groups.split(",")), n_trials=args.trials,
                              report=False)  # fmt: skip
        runs.append(run_training(config))
    a, b = (read_evidence(args.work / "stage2", r.run_id) for r in runs)
    result = compare_evidence(a, b)
    print(format_comparison(result))
    print("\n| interval | AUC | 95% CI | width |\n| --- | --- | --- | --- |")
    for groups, run in zip(args.groups, runs, strict=True):
        low, high = run.metrics["oof_auc_ci95"]
        print(f"| run {groups} (own) | {run.metrics['oof_auc']:.4f} | [{low:.4f}, {high:.4f}] | "
              f"{high - low:.4f} |")  # fmt: skip
    low, high = result["delta_auc_ci95"]
    print(f"| B - A (paired) | {result['delta_auc']:+.4f} | [{low:+.4f}, {high:+.4f}] | "
          f"{high - low:.4f} |")  # fmt: skip
    print(f"DeLong p = {result['p_delong']:.3g}")


if __name__ == "__main__":
    main()
