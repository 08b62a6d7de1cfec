"""Stage 1 speed: whole stage (JPEG files -> Parquet) vs the model's forward pass alone, side by
side in one run, on the real 512x512 ISIC JPEGs from ../shared; plus peak memory at 1x and 4x data.

    .venv/bin/python benchmarks/stage1_throughput.py --backbone local-dir:../shared/weights/tf_efficientnet_lite0
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WEIGHTS, isic_jpeg_layout, machine
from stage1_embed.backbones import create_backbone, parse_backbone_spec
from stage1_embed.config import Stage1Config
from stage1_embed.decode import decode_image_bytes
from stage1_embed.extract import Embedder
from stage1_embed.pipeline import run_stage1
from stage1_embed.preprocess import Preprocess


def forward_only(
    spec: str, batch_size: int, input_size: int | None, device: str, root: Path, n_images: int
) -> float:
    """Images/s of normalise + model on uint8 batches already in memory (the ceiling)."""
    backbone = create_backbone(parse_backbone_spec(spec), input_size=input_size)
    preprocess = Preprocess.from_data_config(backbone.data_config)
    paths = sorted((root / "jpeg" / "train").glob("*.jpg"))[:batch_size]
    batch = torch.stack([preprocess(decode_image_bytes(p.read_bytes()).image) for p in paths])
    if device.startswith("cuda"):
        batch = batch.pin_memory()
    embedder = Embedder(backbone.model, backbone.data_config, torch.device(device),
                        amp_dtype=torch.bfloat16 if device.startswith("cuda") else None)  # fmt: skip
    embedder(batch)  # warm-up
    n_batches = max(1, n_images // batch_size)
    started = time.perf_counter()
    for _ in range(n_batches):
        embedder(batch)
    return n_batches * batch_size / (time.perf_counter() - started)


def whole_stage(
    spec: str,
    batch_size: int,
    input_size: int | None,
    device: str,
    workers: int,
    root: Path,
    out: Path,
    engine: str = "auto",
) -> dict:
    config = Stage1Config(data_dir=root, out_dir=out, backbones=(spec,), batch_size=batch_size, input_size=input_size,
                          device=device, num_workers=workers, progress=False, engine=engine)  # fmt: skip
    started = time.perf_counter()
    summary = run_stage1(config)
    total = time.perf_counter() - started
    result = summary.results[0]
    return {"images": summary.n_images, "seconds_total": total, "seconds_embed": result.seconds,
            "img_s_total": summary.n_images / total, "img_s_embed": result.images_per_second}  # fmt: skip


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def child_rss(args: argparse.Namespace, copies: int) -> dict:
    """Run the whole stage in a fresh process on ``copies`` x the images; report its peak RSS."""
    cmd = [sys.executable, __file__, "--child-copies", str(copies), "--backbone", args.backbone,
           "--batch-size", str(args.batch_size), "--device", args.device]  # fmt: skip
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=f"local-dir:{WEIGHTS / 'tf_efficientnet_lite0'}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--workers", type=int, help="decode workers (default: the stage's own choice)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also peak RSS at 1x and 4x the images"
    )
    parser.add_argument(
        "--engine",
        default="auto",
        help="the whole stage's engine (forward only is always torch eager)",
    )
    parser.add_argument("--child-copies", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.child_copies:
            root = isic_jpeg_layout(Path(tmp) / "data", copies=args.child_copies)
            stats = whole_stage(
                args.backbone,
                args.batch_size,
                None,
                args.device,
                args.workers,
                root,
                Path(tmp) / "out",
            )
            print(json.dumps({**stats, "peak_rss_mb": peak_rss_mb()}))
            return
        root = isic_jpeg_layout(Path(tmp) / "data")
        # Forward-only before and after the stage (both warm), so drift in the machine's speed
        # during the run affects both sides of the ratio alike.
        before = forward_only(
            args.backbone, args.batch_size, args.input_size, args.device, root, 1024
        )
        stage = whole_stage(
            args.backbone,
            args.batch_size,
            args.input_size,
            args.device,
            args.workers,
            root,
            Path(tmp) / "out",
            args.engine,
        )
        after = forward_only(
            args.backbone, args.batch_size, args.input_size, args.device, root, 1024
        )
        forward = (before + after) / 2
    print(f"machine: {machine()}")
    print(f"backbone {args.backbone.split('/')[-1]}, batch {args.batch_size}, input {args.input_size or 'default'}, "
          f"device {args.device}, workers {Stage1Config(num_workers=args.workers).workers_for(args.device)}, engine {args.engine}, "
          f"{stage['images']} real 512x512 JPEGs")  # fmt: skip
    print(
        f"forward only (tensors in memory): {forward:8.1f} img/s  (before {before:.1f}, after {after:.1f})"
    )
    print(
        f"whole stage, embedding loop     : {stage['img_s_embed']:8.1f} img/s  ratio {stage['img_s_embed'] / forward:.2f}"
    )
    print(f"whole stage, files -> Parquet   : {stage['img_s_total']:8.1f} img/s  ratio {stage['img_s_total'] / forward:.2f}"
          f"  ({stage['seconds_total']:.1f} s incl. scan, model build, manifest)")  # fmt: skip
    if args.memory:
        one, four = child_rss(args, 1), child_rss(args, 4)
        print(f"peak RSS: {one['images']} images {one['peak_rss_mb']:.0f} MB; {four['images']} images "
              f"{four['peak_rss_mb']:.0f} MB (x{four['peak_rss_mb'] / one['peak_rss_mb']:.2f} for 4x the data)")  # fmt: skip


if __name__ == "__main__":
    main()
