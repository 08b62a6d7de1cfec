"""Which preprocessing gives the best image features? Logistic regression OOF AUC of one backbone's
embedding on HAM10000 (307 melanomas vs 2,701 nevi; SE about 0.016) for several crop settings.

    .venv/bin/python benchmarks/ham_preprocessing.py --work /tmp/melanoma-ham
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HAM, WEIGHTS, machine, require_shared
from benchmarks.real_data_auc import logistic_baseline
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1

VARIANTS = {  # name: (crop_mode, crop_pct, input_size, tta)
    "model default (center crop 0.875, 224)": (None, None, None, ()),
    "center, crop_pct 1.0": ("center", 1.0, None, ()),
    "squash, crop_pct 1.0": ("squash", 1.0, None, ()),
    "border, crop_pct 1.0": ("border", 1.0, None, ()),
    "squash 1.0 at 288": ("squash", 1.0, 288, ()),
    "squash 1.0 + hflip,vflip TTA": ("squash", 1.0, None, ("hflip", "vflip")),
    "model default + hflip,vflip TTA": (None, None, None, ("hflip", "vflip")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-ham"))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    args = parser.parse_args()
    spec = f"local-dir:{require_shared(WEIGHTS / args.backbone)}"
    print(
        f"machine: {machine()}; backbone {args.backbone}; logistic regression, 5 patient-grouped folds"
    )
    for i, (name, (mode, pct, size, tta)) in enumerate(VARIANTS.items()):
        out = args.work / f"v{i}"
        started = time.perf_counter()
        run_stage1(Stage1Config(data_dir=require_shared(HAM), out_dir=out, backbones=(spec,), crop_mode=mode,
                                crop_pct=pct, input_size=size, tta=tta, progress=False))  # fmt: skip
        auc = logistic_baseline(out, args.backbone)
        print(f"  {name:<40} AUC {auc:.3f}   (stage 1 {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
