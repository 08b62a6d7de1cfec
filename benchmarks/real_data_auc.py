"""Honest AUCs on the real data in ../shared, each next to a plain baseline, in one run.

    .venv/bin/python benchmarks/real_data_auc.py --work /tmp/melanoma-bench --trials 20

(1) full real train.csv, no images: metadata only, and with patient statistics;
(2) HAM10000 half (307 melanomas vs 2,701 nevi): logistic regression on the Lite0 embedding
    (the reference), metadata only, embeddings only, and the stacker;
(3) the 1,847 real ISIC 2020 JPEGs (27 malignant): the stacker with ugly-duckling features.
Stage 1 outputs are cached under --work, so a rerun only repeats stage 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import optuna
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, ISIC, WEIGHTS, isic_jpeg_layout, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage2_boost.config import Stage2Config
from stage2_boost.data import load_stage_data
from stage2_boost.features.ugly_duckling import UglyDucklingFeatures
from stage2_boost.train import run_training

BACKBONES = tuple(
    f"local-dir:{WEIGHTS / n}"
    for n in ("tf_efficientnet_lite0", "tf_efficientnet_lite2", "mobilenetv2_100_tfslim_quant")
)


def stage1(data: Path, out: Path, backbones: tuple[str, ...], **kwargs) -> Path:
    run_stage1(
        Stage1Config(data_dir=data, out_dir=out, backbones=backbones, progress=False, **kwargs)
    )
    return out


def stacker(
    features: Path, name: str, trials: int, groups: tuple[str, ...] | None, backbones=None
) -> str:
    config = Stage2Config(features_dir=features, out_dir=features / f"stage2-{name}", feature_groups=groups,
                          backbones=backbones, n_trials=trials, report=True)  # fmt: skip
    m = run_training(config).metrics
    models = ", ".join(f"{k} {v['oof_auc']:.3f}" for k, v in m["models"].items())
    return (f"{m['oof_auc']:.3f} [{m['oof_auc_ci95'][0]:.3f}, {m['oof_auc_ci95'][1]:.3f}]  tuning {m['tuning_auc']:.3f}"
            f"  ({models})")  # fmt: skip


def logistic_baseline(features: Path, slug: str, seed: int = 42) -> float:
    """OOF AUC of a scaled logistic regression on one raw embedding, patient-grouped 5 folds."""
    data = load_stage_data(features, [slug])
    rows = data.split_index("train")
    X, y = data.embeddings[slug][rows], data.target[rows]
    groups = data.frame["patient_id"].to_numpy()[rows]
    oof = np.zeros(len(rows))
    for fit, valid in StratifiedGroupKFold(5, shuffle=True, random_state=seed + 1000).split(
        X, y, groups
    ):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)).fit(
            X[fit], y[fit]
        )
        oof[valid] = model.predict_proba(X[valid])[:, 1]
    return float(roc_auc_score(y, oof))


def duckling_auc(features: Path, slug: str) -> float:
    """AUC of the within-patient distance z-score by itself (label-free, nothing fitted)."""
    data = load_stage_data(features, [slug])
    z = UglyDucklingFeatures(slug).compute(data)[f"{slug}__ud_dist_z"].fillna(0)
    return float(roc_auc_score(data.target, z))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-bench"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--only", choices=["metadata", "ham", "isic"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"machine: {machine()}; {args.trials} trials per model")
    if args.only in (None, "metadata"):
        meta = stage1(
            args.work / "meta",
            args.work / "meta" / "out",
            (),
            train_csv=require_shared(ISIC / "csv" / "train.csv"),
        )
        print("(1) full train.csv, no images (33,126 rows, 584 malignant)")
        print("    metadata only           :", stacker(meta, "meta", args.trials, ("metadata",)))
        print(
            "    metadata + patient      :",
            stacker(meta, "meta-patient", args.trials, ("metadata", "patient")),
        )
    if args.only in (None, "ham"):
        ham = stage1(require_shared(HAM), args.work / "ham", BACKBONES)
        print("(2) HAM10000 half (3,008 images, 307 melanoma; one image per lesion)")
        reference = logistic_baseline(ham, "tf_efficientnet_lite0")
        print(f"    logistic regression on the lite0 embedding (reference): {reference:.3f}")
        experiments = {
            "metadata only": ("metadata",),
            "PCA embeddings (3 CNNs)": ("embedding",),
            "linear probes (3 CNNs)": ("probe",),
            "stack: metadata + PCA + probes": ("metadata", "embedding", "probe"),
        }
        for i, (name, groups) in enumerate(experiments.items()):
            print(f"    {name:<32}:", stacker(ham, f"e{i}", args.trials, groups))
    if args.only in (None, "isic"):
        isic = stage1(isic_jpeg_layout(args.work / "isic-data"), args.work / "isic", BACKBONES)
        print("(3) real ISIC 2020 JPEGs (1,847 images, 27 malignant, 68 patients)")
        reference = logistic_baseline(isic, "tf_efficientnet_lite0")
        print(f"    logistic regression on the lite0 embedding: {reference:.3f}")
        print(
            f"    ugly-duckling z-score alone, no training (lite0): {duckling_auc(isic, 'tf_efficientnet_lite0'):.3f}"
        )
        experiments = {
            "metadata + patient": ("metadata", "patient"),
            "full stack (default groups)": None,
        }
        for i, (name, groups) in enumerate(experiments.items()):
            print(f"    {name:<32}:", stacker(isic, f"e{i}", args.trials, groups))


if __name__ == "__main__":
    main()
