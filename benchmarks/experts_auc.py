"""Fine-tuned experts stacked out of fold: (i) the expert alone, (ii) the stack without it, (iii)
the stack with it, OOF AUC with patient-bootstrap CIs, on HAM10000 and on the ISIC JPEGs.

    .venv/bin/python benchmarks/experts_auc.py --work /tmp/melanoma-extra --trials 20

Stage 1 outputs are those of benchmarks/extra_data_auc.py (same --work; built here if absent):
three shared CNNs on the 1,847 ISIC JPEGs with the HAM10000 half as extra data. The expert is
Lite0 fine-tuned with the CPU recipe defaults (128 px, 4 epochs, AdamW, flips/turns/colour/scale
augmentation, TTA) in stage 2's evaluation folds; on ISIC the HAM half joins every fold's training
part. (ii) is read from the extra-data benchmark's run when it exists (same features and trials).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, WEIGHTS, isic_jpeg_layout, machine
from benchmarks.extra_data_auc import BACKBONES
from stage1_embed.config import Stage1Config
from stage1_embed.experts.recipe import default_recipe
from stage1_embed.experts.stage import ExpertConfig, expert_path, run_experts
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import extra_features_dir
from stage2_boost.config import Stage2Config
from stage2_boost.metrics import bootstrap_auc_ci
from stage2_boost.train import run_training

SPEC = f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}"
SLUG = "tf_efficientnet_lite0"


def stack(
    features: Path, out: Path, trials: int, extra: tuple[Path, ...], experts: tuple[str, ...]
) -> str:
    metrics_file = out / "metrics.json"
    if not experts and metrics_file.is_file():  # the extra-data benchmark's run
        m = json.loads(metrics_file.read_text())
    else:
        m = run_training(Stage2Config(features_dir=features, out_dir=out, n_trials=trials, extra_data=extra,
                                      experts=experts)).metrics  # fmt: skip
    low, high = m["oof_auc_ci95"]
    return f"**{m['oof_auc']:.3f}** [{low:.3f}, {high:.3f}]"


def expert_alone(features: Path, data: Path, extra: tuple[Path, ...]) -> tuple[str, float]:
    started = time.perf_counter()
    config = ExpertConfig(data_dir=data, out_dir=features, specs=(SPEC,), recipe=default_recipe("cpu"),
                          extra_data=extra, progress=False)  # fmt: skip
    run_experts(config)
    seconds = time.perf_counter() - started
    table = pd.read_parquet(expert_path(features, SLUG))
    manifest = pd.read_parquet(features / "manifest.parquet")
    train = table[table["split"] == "train"].merge(
        manifest[["image_name", "patient_id", "target"]], on="image_name"
    )
    low, high = bootstrap_auc_ci(train["target"].to_numpy(int), train["expert"].to_numpy(float),
                                 train["patient_id"].to_numpy(), 1000, 42)  # fmt: skip
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(train["target"].to_numpy(int), train["expert"].to_numpy(float))
    return f"**{auc:.3f}** [{low:.3f}, {high:.3f}]", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-extra"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--datasets", default="ham,isic", help="which rows to run: ham, isic or both"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    isic = isic_jpeg_layout(args.work / "isic")
    features = args.work / "features"
    run_stage1(
        Stage1Config(
            data_dir=isic, out_dir=features, backbones=BACKBONES, progress=False, extra_data=(HAM,)
        )
    )
    ham_features = extra_features_dir(features, HAM)
    print(f"machine: {machine()}; expert recipe (CPU defaults): {default_recipe('cpu').to_json()}")
    print(
        "| primary data | (i) expert alone | (ii) stack without experts | (iii) stack with the expert | expert stage wall time |"
    )
    print("| --- | --- | --- | --- | --- |")
    for label, folder, data, extra, name in (("HAM10000 half", ham_features, HAM, (), "ham"),
                                             ("ISIC 2020 JPEGs + HAM half as extra", features, isic, (HAM,), "isic")):  # fmt: skip
        if name not in args.datasets.split(","):
            continue
        alone, seconds = expert_alone(folder, data, extra)
        without = stack(
            folder,
            args.work / f"stage2-{name}-{'plus-ham' if extra else 'alone'}",
            args.trials,
            extra,
            (),
        )
        with_expert = stack(
            folder, args.work / f"stage2-{name}-experts", args.trials, extra, (SLUG,)
        )
        print(
            f"| {label} | {alone} | {without} | {with_expert} | {seconds / 60:.1f} min |",
            flush=True,
        )


if __name__ == "__main__":
    main()
