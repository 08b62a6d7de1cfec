"""``python -m stage1_embed``: embed every image of a dataset with several pretrained CNNs."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from .backbones import DEFAULT_BACKBONES, HUB_PRESET, SPEC_FORMS
from .common import run_cli, setup_logging
from .config import DEFAULT_OUT_DIR, POOLINGS, STAGE_POOLINGS, Stage1Config
from .decode import DEFAULT_MAX_PIXELS
from .errors import ConfigError
from .extract import TTA_VIEWS
from .sources import SOURCES

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stage1_embed",
        description="Stage 1: pooled embeddings of every image from pretrained timm CNNs, to Parquet. "
        "`python -m stage1_embed check --help`: the data check alone.",
        epilog=f"Backbone forms: {SPEC_FORMS}. Stronger hub preset (needs internet): "
        + ",".join(HUB_PRESET),
    )
    # each flag's dest is the Stage1Config field it sets (config_from_args)
    p.add_argument(
        "--data",
        dest="data_dir",
        metavar="DATA",
        type=Path,
        help="dataset folder (Kaggle layout); without it, only --train-csv/--test-csv/--images",
    )
    p.add_argument("--out", dest="out_dir", metavar="OUT", type=Path, default=DEFAULT_OUT_DIR,
                   help="features folder to write")  # fmt: skip
    p.add_argument("--train-csv", type=Path, help="train CSV (default: DATA/train.csv)")
    p.add_argument(
        "--test-csv",
        type=Path,
        help="test CSV (default: DATA/test.csv if present; none without --data)",
    )
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        type=Path,
        help="image folder, if not inside --data",
    )
    p.add_argument("--format", dest="image_format", default="auto", choices=["auto", *SOURCES],
                   help="force the image format")  # fmt: skip
    p.add_argument(
        "--backbones",
        default=",".join(DEFAULT_BACKBONES),
        help="comma-separated backbone specs, or 'none' for a metadata-only manifest",
    )
    p.add_argument(
        "--weights-dir",
        type=Path,
        help="folder of local-dir weight folders ($MELANOMA_WEIGHTS_DIR)",
    )
    p.add_argument(
        "--allow-random-init", action="store_true", help="fall back to random weights (recorded)"
    )
    p.add_argument(
        "--random-init", action="store_true", help="use random weights on purpose (a baseline)"
    )
    p.add_argument("--input-size", type=int, help="override the backbone's input size (e.g. 384)")
    p.add_argument(
        "--crop-pct",
        type=float,
        help="fraction the centre crop keeps (timm crop_pct; 1.0 keeps all)",
    )
    p.add_argument(
        "--crop-mode",
        choices=["center", "squash", "border"],
        help="timm crop_mode (default: the model's own)",
    )
    p.add_argument(
        "--colour-constancy",
        choices=["none", "shades-of-gray"],
        default="none",
        help="make each image's illuminant grey before embedding (Shades of Gray, p=6)",
    )
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="avg",
        help="timm's global pooling of the last feature map; catavgmax doubles the width",
    )
    p.add_argument(
        "--stages",
        default="last,last-1",
        help="what the embedding holds: the average-pooled outputs of stages counted from the "
        "end (last, last-1, ...) and/or head (the pooled features the classifier sees); default "
        "the last two stages, no head",
    )
    p.add_argument(
        "--stage-pooling",
        choices=STAGE_POOLINGS,
        default="avg",
        help="how each stage's map is pooled: avg (default); pos-neg, the averages of its "
        "positive and negative parts side by side (twice the width); gem, the generalised mean "
        "(p=3) of its positive part",
    )
    p.add_argument(
        "--tta", default="", help=f"comma-separated extra views averaged in: {','.join(TTA_VIEWS)}"
    )
    p.add_argument(
        "--channel-order",
        default="auto",
        choices=["auto", "rgb", "bgr"],
        help="how the images store their colours: auto (default) judges each source and swaps "
        "red and blue back where they are clearly swapped, refusing on mixed evidence; rgb: as "
        "the format says; bgr: red and blue swapped (written from OpenCV arrays)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help="inference engine: auto = ONNX Runtime on CPU (exported once, checked against "
        "torch), torch on CUDA",
    )
    p.add_argument(
        "--decode",
        default="auto",
        choices=["auto", "pil", "torchvision"],
        help="JPEG decoding: auto = torchvision on the GPU (nvJPEG, batched) when the device is "
        "CUDA and the images are JPEG, else PIL on the CPU (draft mode for large originals)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers",
        dest="num_workers",
        metavar="WORKERS",
        type=int,
        help="decode worker processes (default: none with ONNX Runtime, which decodes in a "
        "thread per core; on CUDA enough to feed the GPU)",
    )
    p.add_argument("--chunk-size", type=int, default=1024, help="images per resumable part")
    p.add_argument(
        "--skip-missing", action="store_true", help="run on the images present, dropping the rest"
    )
    p.add_argument(
        "--max-failures", type=int, default=0, help="unreadable images tolerated (default 0)"
    )
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="decompression-bomb guard"
    )
    p.add_argument("--num-shards", type=int, default=1, help="split the work into N shards")
    p.add_argument("--shard-index", type=int, default=0, help="which shard this process runs")
    p.add_argument(
        "--extra-data",
        type=Path,
        action="append",
        default=[],
        help="extra labelled dataset (Kaggle or ISIC 2019 layout), embedded into OUT/extra/<name> "
        "and used only for training (repeatable)",
    )
    p.add_argument(
        "--drop-extra-duplicates",
        action="store_true",
        help="drop extra images whose name is already in another source (default: an error)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="score with this saved model (OUT/stage2/model): its backbones and preprocessing, "
        "weights checked by sha256; no train.csv needed, a bare folder of images works; missing "
        "or unreadable images are recorded per image",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> Stage1Config:
    values = {f.name: getattr(args, f.name) for f in fields(Stage1Config) if hasattr(args, f.name)}
    named = "" if args.backbones.strip().lower() == "none" else args.backbones
    values |= {"backbones": _split(named), "stages": _split(args.stages), "tta": _split(args.tta),
               "extra_data": tuple(args.extra_data)}  # fmt: skip
    if args.model is not None:  # the model decides what to compute, not the CLI defaults
        from .scoring import model_backbones

        model = model_backbones(args.model)
        if args.channel_order == "auto" and not all(b.natural_colours for b in model):
            logger.warning("the model predates colour-order checks: it saw its training images "
                           "as stored, so these are used as stored too (--channel-order rgb)")  # fmt: skip
            values["channel_order"] = "rgb"
        values |= {"backbones": tuple(b.spec for b in model), "tta": model[0].tta if model else (),
                   "model_dir": args.model, "skip_missing": True, "max_failures": 10**9,
                   "precision": model[0].precision if model and model[0].precision != "fp32" else "auto"}  # fmt: skip
    if set(values["tta"]) - set(TTA_VIEWS):
        raise ConfigError(f"--tta {args.tta!r}: views must be among {','.join(TTA_VIEWS)}.")
    config = Stage1Config(**values)
    _ = config.root  # no data named at all: an error before anything is read or written
    return config


def _split(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:  # python -m stage1_embed check: the data check alone (check.py)
        from .check import main as check_main

        return check_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def _main() -> int:
        from .pipeline import format_summary, run_stage1

        summary = run_stage1(config_from_args(args))
        print(format_summary(summary))
        if not summary.complete:
            print(
                "some backbones wait for other shards: run the remaining --shard-index values; "
                "the last one to finish assembles the files."
            )
        return 0

    return run_cli(_main)


if __name__ == "__main__":
    sys.exit(main())
