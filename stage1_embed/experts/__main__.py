"""``python -m stage1_embed.experts``: fine-tune image experts inside stage 2's patient folds."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..common import run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stage1_embed.experts", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="the dataset folder stage 1 read")
    p.add_argument(
        "--out", type=Path, required=True, help="stage 1's output folder (manifest.parquet)"
    )
    p.add_argument("--experts", required=True, help="comma-separated backbone specs to fine-tune")
    p.add_argument("--images", type=Path, help="image folder, if stage 1 was given --images")
    p.add_argument("--format", default="auto", help="image format, as for stage 1")
    p.add_argument("--weights-dir", type=Path, help="folder of local-dir weight folders")
    p.add_argument("--extra-data", type=Path, action="append", default=[],
                   help="extra training set embedded by stage 1 (--extra-data): only ever trains")  # fmt: skip
    p.add_argument(
        "--folds", type=int, default=5, help="stage 2's --folds (the same folds are used)"
    )
    p.add_argument(
        "--seed", type=int, default=42, help="stage 2's --seed (the same folds are used)"
    )
    p.add_argument("--no-merge-duplicates", action="store_true",
                   help="stage 2's --no-merge-duplicates (the same folds are used)")  # fmt: skip
    p.add_argument("--fold", type=int, action="append",
                   help="run only this fold (repeatable): one fold per process or GPU; the last to "
                        "finish assembles the output")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r = p.add_argument_group(
        "recipe (defaults depend on the device: CPU 128 px, 4 epochs; CUDA 384 px, 12 epochs)"
    )
    r.add_argument("--image-size", type=int)
    r.add_argument("--epochs", type=int)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--lr", type=float, help="AdamW peak learning rate")
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--warmup-epochs", type=float)
    r.add_argument("--balance", choices=["weight", "none"], help="positive-class loss weight")
    r.add_argument("--scale-min", type=float, help="smallest RandomResizedCrop scale")
    r.add_argument("--color", type=float, help="ColorJitter strength (0: off)")
    r.add_argument("--no-rotate", dest="rotate", action="store_const", const=False,
                   help="no flips or quarter turns")  # fmt: skip
    r.add_argument("--tta", help="views averaged at prediction (default hflip,vflip; 'none')")
    r.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast on CUDA")
    r.add_argument("--ema", type=float,
                   help="score an exponential moving average of the weights with this decay per "
                        "step (timm's ModelEmaV3; e.g. 0.99; default 0: the weights themselves)")  # fmt: skip
    r.add_argument("--layer-decay", type=float,
                   help="layer-wise learning rates: each backbone block this factor slower than the "
                        "next, the new head at --lr (timm's param_groups_layer_decay; e.g. 0.85; "
                        "default 1: one rate)")  # fmt: skip
    r.add_argument("--mixup", type=float,
                   help="mix each batch with itself reversed, images and labels, by Beta(a, a) "
                        "(e.g. 0.4; default 0: off)")  # fmt: skip
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for augmentation")
    p.add_argument(
        "--max-memory-gb", type=float, default=8.0, help="hold decoded images in memory up to this"
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def _main() -> int:
        import torch

        from .recipe import Recipe, default_recipe
        from .stage import ExpertConfig, run_experts

        device = (
            args.device
            if args.device != "auto"
            else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        tta = (
            None if args.tta is None else tuple(v for v in args.tta.split(",") if v and v != "none")
        )
        # the recipe flags' dests are Recipe's fields; a flag not given (None) keeps the default
        recipe = default_recipe(device, **{f.name: getattr(args, f.name, None) for f in fields(Recipe)}
                                | {"tta": tta})  # fmt: skip
        config = ExpertConfig(
            data_dir=args.data, out_dir=args.out, specs=tuple(s.strip() for s in args.experts.split(",") if s.strip()),
            recipe=recipe, device=device, n_folds=args.folds, seed=args.seed,
            merge_duplicates=not args.no_merge_duplicates,
            folds=tuple(args.fold) if args.fold else None, extra_data=tuple(args.extra_data),
            images_dir=args.images, image_format=args.format, weights_dir=args.weights_dir,
            workers=args.workers, max_memory_gb=args.max_memory_gb, progress=not args.no_progress,
        )  # fmt: skip
        for result in run_experts(config):
            auc = f", out-of-fold AUC {result.oof_auc:.4f}" if result.oof_auc is not None else ""
            print(f"{result.slug}: {result.status} in {result.seconds:.0f} s{auc}")
        return 0

    return run_cli(_main)


if __name__ == "__main__":
    sys.exit(main())
