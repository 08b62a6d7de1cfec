"""Does extra training data help? OOF AUC on the primary rows, with and without an extra set.

    .venv/bin/python benchmarks/extra_data_auc.py --work /tmp/melanoma-extra --trials 20

(1) the 1,847 real ISIC 2020 JPEGs (27 malignant) as primary data, alone and with the HAM10000
    half (3,008 images, 307 melanoma) as extra training data;
(2) the reverse: the HAM10000 half as primary, alone and with the ISIC JPEGs as extra data.
Frozen embeddings of the three shared CNNs, default feature groups, the same folds and trial count
in each pair. Stage 1 runs once (``--extra-data``); the reverse reuses its outputs, because stage 2
takes a stage 1 output folder as ``--extra-data``. Everything is cached under --work.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, WEIGHTS, isic_jpeg_layout, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import extra_features_dir
from stage2_boost.config import Stage2Config
from stage2_boost.train import run_training

BACKBONES = tuple(
    f"local-dir:{WEIGHTS / n}"
    for n in ("tf_efficientnet_lite0", "tf_efficientnet_lite2", "mobilenetv2_100_tfslim_quant")
)


def stacker(features: Path, out: Path, trials: int, extra: tuple[Path, ...]) -> str:
    started = time.perf_counter()
    config = Stage2Config(features_dir=features, out_dir=out, n_trials=trials, extra_data=extra)
    m = run_training(config).metrics
    low, high = m["oof_auc_ci95"]
    n_extra = m["extra"]["n_rows"]
    return (f"| {m['n_train']} ({m['n_pos']} malignant) | {n_extra} ({m['extra']['n_pos']}) | "
            f"**{m['oof_auc']:.3f}** [{low:.3f}, {high:.3f}] | {m['tuning_auc']:.3f} | "
            f"{time.perf_counter() - started:.0f} s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-extra"))
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    require_shared(HAM)
    require_shared(WEIGHTS)
    isic = isic_jpeg_layout(args.work / "isic")
    features = args.work / "features"
    started = time.perf_counter()
    run_stage1(Stage1Config(data_dir=isic, out_dir=features, backbones=BACKBONES, progress=False,
                            extra_data=(HAM,)))  # fmt: skip
    print(
        f"machine: {machine()}; stage 1 (3 CNNs, both sets): {time.perf_counter() - started:.0f} s"
    )
    ham_features = extra_features_dir(features, HAM)
    print("| primary data | train rows | extra rows (malignant) | OOF AUC on primary rows [95% CI] "
          "| tuning AUC | stage 2 time |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    runs = (
        ("ISIC 2020 JPEGs", features, "isic-alone", ()),
        ("ISIC 2020 JPEGs", features, "isic-plus-ham", (HAM,)),
        ("HAM10000 half", ham_features, "ham-alone", ()),
        ("HAM10000 half", ham_features, "ham-plus-isic", (features,)),
    )
    for label, folder, name, extra in runs:
        row = stacker(folder, args.work / f"stage2-{name}", args.trials, extra)
        print(f"| {label} {row}", flush=True)


if __name__ == "__main__":
    main()
