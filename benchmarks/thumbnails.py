"""What thumbnails cost: the few a page shows, made on demand, against all of a dataset's.

    .venv/bin/python benchmarks/thumbnails.py --work /tmp/melanoma-thumbs

On the 1,847 shared ISIC JPEGs (512x512): seconds and bytes for the ~150 images report.html
shows and for every image, side by side in one run, then scaled to the 44,108 images (33,126
train + 10,982 test) of the full competition. Stage 1 outputs (Lite0) are cached under --work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WEIGHTS, isic_jpeg_layout, machine, require_shared
from stage1_embed.config import Stage1Config
from stage1_embed.pipeline import run_stage1
from stage1_embed.thumbnails import make_thumbnails
from stage2_boost.galleries import Card
from stage2_boost.html_pages import MAX_PREDICTION_CARDS, write_predictions_html

FULL_SCALE = 44_108
PAGE = 150  # about what report.html shows: 2 galleries of 12 and 4 patient strips of up to 24


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/melanoma-thumbs"))
    args = parser.parse_args()
    features = args.work / "features"
    if not (features / "manifest.parquet").is_file():
        spec = f"local-dir:{require_shared(WEIGHTS / 'tf_efficientnet_lite0')}"
        run_stage1(Stage1Config(data_dir=isic_jpeg_layout(args.work / "data"), out_dir=features,
                                backbones=(spec,), progress=False))  # fmt: skip
    manifest = pd.read_parquet(features / "manifest.parquet")
    keys = list(zip(manifest["split"], manifest["image_name"], strict=True))
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}; {len(keys)} ISIC JPEGs, 512x512")
    rows = []
    for label, chosen in (("one report page", keys[:PAGE]), ("every image", keys)):
        started = time.perf_counter()
        made = make_thumbnails(features, chosen)
        seconds = time.perf_counter() - started
        size = sum(len(v) for v in made.values() if isinstance(v, bytes))
        rows.append((label, len(chosen), seconds, size))
    per_image_s, per_image_b = rows[1][2] / rows[1][1], rows[1][3] / rows[1][1]
    print("| thumbnails | images | seconds | bytes |\n| --- | --- | --- | --- |")
    for label, n, seconds, size in rows:
        print(f"| {label} | {n:,} | {seconds:.2f} | {size / 1e6:.2f} MB |")
    print(f"| every image at full scale (scaled) | {FULL_SCALE:,} | {per_image_s * FULL_SCALE:.0f} | "
          f"{per_image_b * FULL_SCALE / 1e6:.0f} MB |")  # fmt: skip
    print(f"one page costs {rows[0][2] / (per_image_s * FULL_SCALE):.4f}x the full-scale set")
    page_sizes(made, args.work)


def page_sizes(thumbs: dict, work: Path) -> None:
    """predictions.html for 10,000 scored images (500 patients of 20), the real thumbnails reused:
    the page shows MAX_PREDICTION_CARDS of them whatever the count."""
    images = [v for v in thumbs.values() if isinstance(v, bytes)]
    cards = [Card(f"IMG_{i:05d}", f"P{i // 20:04d}", float(i % 997) / 997, reasons="embedding +0.41; age +0.12")
             for i in range(10_000)]  # fmt: skip
    summary = SimpleNamespace(model_run="benchmark", n_scored=10_000, n_unreadable=0, split="test",
                              model_auc=0.9, skipped=[])  # fmt: skip

    def add(shown: list[Card]) -> None:
        for i, card in enumerate(shown):
            card.thumbnail = images[i % len(images)]

    started = time.perf_counter()
    path = write_predictions_html(work, summary, cards, add)
    print(
        f"predictions.html for 10,000 scored images: {path.stat().st_size / 1e6:.2f} MB, "
        f"{MAX_PREDICTION_CARDS} shown, {time.perf_counter() - started:.2f} s"
    )


if __name__ == "__main__":
    main()
