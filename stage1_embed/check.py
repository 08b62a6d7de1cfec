"""``python -m stage1_embed check``: the data check alone, before anything is embedded.

Reads the CSVs and images as stage 1 does (content digests remembered in OUT, so a later stage 1
run into the same folder hashes nothing again), judges every image's colour order, looks for
identical images and conflicting metadata, measures the acquisition-field shortcut and the shift
between train and test and between the main data and each extra set (on the embeddings too when
stage 1 wrote them into OUT), and writes ``OUT/data_check.json`` and ``OUT/data_check.html``
(the images of every finding)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .colour import judge_source
from .common import atomic_write_text
from .config import Stage1Config
from .data_check import (
    metadata_conflicts,
    near_duplicates,
    shift,
    shortcut,
    summary_lines,
    write_data_check,
)
from .errors import DataError
from .extra import detect_extra, read_extra_table
from .metadata import load_metadata
from .pages import page_environment
from .scan import ScanResult, scan_dataset
from .schema import embeddings_path, extra_features_dir, read_embeddings
from .sources import SOURCES, ImageRef, ImageSource, create_source
from .thumbnails import source_thumbnails

logger = logging.getLogger(__name__)
SHOWN_PAIRS = 60  # duplicate pairs with thumbnails on the page
COLOUR_SAMPLES = 6  # images per source shown as stored and as used


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stage1_embed check", description=__doc__)
    p.add_argument("--data", type=Path, help="dataset folder (Kaggle layout)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for data_check.json/.html: stage 1's output folder reuses its "
                   "content digests and embeddings")  # fmt: skip
    p.add_argument("--train-csv", type=Path, help="train CSV (default: DATA/train.csv)")
    p.add_argument("--test-csv", type=Path, help="test CSV (default: DATA/test.csv if present)")
    p.add_argument("--images", type=Path, help="image folder, if not inside --data")
    p.add_argument("--format", default="auto", choices=["auto", *SOURCES])
    p.add_argument("--extra-data", type=Path, action="append", default=[],
                   help="extra labelled dataset, checked beside the main one (repeatable)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run_check(config: Stage1Config) -> dict[str, Any]:
    """Check the data of ``config`` (and its extra sets); write and return the result."""
    started = time.perf_counter()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = [("main", config, load_metadata(config.train_csv_path, config.test_csv_path))]
    extras = {}  # name -> the folder stage 1 writes its outputs to (OUT/extra/<name>)
    for root in config.extra_data:
        extra = detect_extra(root)
        extras[extra.name] = extra_features_dir(out, root)
        table = read_extra_table(extra).assign(split="train")
        sets.append((extra.name, replace(config, data_dir=extra.root, images_dir=extra.images_dir,
                                         image_format="auto"), table))  # fmt: skip
    scans, colours, frames = {}, {}, []
    for name, cfg, table in sets:
        source = create_source(cfg.root, cfg.images_dir, cfg.image_format, cfg.max_pixels)
        scan = scan_dataset(table, source, skip_missing=True, out=out if name == "main" else None)
        refs = [scan.refs[k] for k in sorted(scan.refs)]
        if not refs:
            raise DataError(f"No readable image in {source.describe()} ({name} data): nothing "
                            "to check. Point --data/--images at the images.")  # fmt: skip
        for split in sorted({r.split for r in refs}):
            label = split if name == "main" else f"{name} ({split})"
            colours[label] = judge_source(
                source, [r for r in refs if r.split == split], None
            ).to_json()
        scans[name] = (source, scan)
        frames.append(scan.manifest.assign(source=name))
    every = pd.concat(frames, ignore_index=True)
    result = {"dataset": config.dataset_name, "n_images": int((every["read_status"] == "ok").sum()),
              "n_missing": sum(s.n_dropped_missing for _, s in scans.values()),
              "channel_order": colours, "near_duplicates": near_duplicates(every),
              "metadata": metadata_conflicts(scans["main"][1].manifest),
              "shortcut": shortcut(scans["main"][1].manifest),
              "shift": _shifts(out, {name: s.manifest for name, (_, s) in scans.items()}, extras)}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_data_check(out, result)
    write_check_page(out, result, scans)
    return result


def _shifts(
    out: Path, manifests: dict[str, pd.DataFrame], extras: dict[str, Path]
) -> dict[str, Any]:
    """Adversarial validation of train vs test and of the main data vs each extra set, on the
    metadata and, where stage 1 already embedded both sides into OUT, on one backbone's
    embeddings (the first by name)."""
    main = manifests["main"]
    pairs = {}
    if (main["split"] == "test").any():
        pairs["train vs test"] = (
            main[main["split"] == "train"],
            main[main["split"] == "test"],
            out,
            out,
        )
    for name, folder in extras.items():
        pairs[f"main vs {name}"] = (main[main["split"] == "train"], manifests[name], out, folder)
    found = {}
    for label, (a, b, folder_a, folder_b) in pairs.items():
        both = pd.concat([a, b], ignore_index=True)
        is_b = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
        vectors, slug = _vectors(both, folder_a, folder_b, len(a))
        keep = ~np.isnan(vectors).any(axis=1) if vectors is not None else np.ones(len(both), bool)
        found[label] = shift(both[keep], is_b[keep], None if vectors is None else vectors[keep])
        found[label]["backbone"] = slug
    return found


def _vectors(
    both: pd.DataFrame, folder_a: Path, folder_b: Path, n_a: int
) -> tuple[np.ndarray | None, str | None]:
    """Each row's embedding from the stage 1 outputs of its side (NaN where it has none), from
    the first backbone both sides have; (None, None) when they share none."""
    slugs = sorted(p.stem for p in (folder_a / "embeddings").glob("*.parquet"))
    slugs = [s for s in slugs if embeddings_path(folder_b, s).is_file()]
    if not slugs:
        return None, None
    sides = []
    for folder, rows in ((folder_a, both.iloc[:n_a]), (folder_b, both.iloc[n_a:])):
        table = read_embeddings(embeddings_path(folder, slugs[0]))
        index = pd.MultiIndex.from_frame(table.keys[["split", "image_name"]])
        where = index.get_indexer(pd.MultiIndex.from_frame(rows[["split", "image_name"]]))
        padded = np.vstack(
            [table.vectors, np.full((1, table.vectors.shape[1]), np.nan, np.float32)]
        )
        sides.append(padded[where])  # -1 (no embedding) picks the NaN row
    return np.vstack(sides), slugs[0]


def write_check_page(
    out: Path, result: dict[str, Any], scans: dict[str, tuple[ImageSource, ScanResult]]
) -> Path:
    """``OUT/data_check.html``: each finding with its images (thumbnails embedded)."""
    pairs = result["near_duplicates"][:SHOWN_PAIRS]
    wanted: dict[str, list[ImageRef]] = {}
    for pair in pairs:
        for side in ("a", "b"):
            _add(wanted, scans, pair[f"image_{side}"], pair[f"split_{side}"])
    thumbs: dict[str, bytes | str] = {}
    for name, refs in wanted.items():
        made = source_thumbnails(scans[name][0], refs)
        thumbs |= {f"{k[0]}/{k[1]}": v for k, v in made.items()}
    page = page_environment().get_template("data_check.html.j2").render(
        title=f"melanoma-stack data check: {result['dataset']}", r=result,
        findings=summary_lines(result), pairs=pairs, thumbs=thumbs,
        colours=_colour_rows(result, scans),
    )  # fmt: skip
    path = Path(out) / "data_check.html"
    atomic_write_text(path, page)
    return path


def _add(wanted: dict[str, list[ImageRef]], scans: dict[str, tuple[ImageSource, ScanResult]],
         image: str, split: str) -> None:  # fmt: skip
    for name, (_, scan) in scans.items():
        ref = scan.refs.get((split, image))
        if ref is not None:
            wanted.setdefault(name, []).append(ref)
            return


def _colour_rows(
    result: dict[str, Any], scans: dict[str, tuple[ImageSource, ScanResult]]
) -> list[dict[str, Any]]:
    """Per source: its verdict, and a few images as stored and as stage 1 will use them."""
    rows = []
    for name, (source, scan) in scans.items():
        for split in sorted({k[0] for k in scan.refs}):
            label = split if name == "main" else f"{name} ({split})"
            verdict = result["channel_order"][label]
            source.channel_orders[split] = "bgr" if verdict["verdict"] == "bgr" else "rgb"
            names = verdict["disagreeing"] or sorted(n for s, n in scan.refs if s == split)
            refs = [scan.refs[(split, n)] for n in names[:COLOUR_SAMPLES]]
            stored = source_thumbnails(source, refs, as_stored=True)
            used = source_thumbnails(source, refs)
            rows.append({"source": label, "v": verdict, "disagreeing": bool(verdict["disagreeing"]),
                         "images": [(r.image_name, stored[(split, r.image_name)],
                                     used[(split, r.image_name)]) for r in refs]})  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    from .common import run_cli, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def _main() -> int:
        config = Stage1Config(data_dir=args.data, out_dir=args.out, train_csv=args.train_csv,
                              test_csv=args.test_csv, images_dir=args.images,
                              image_format=args.format, extra_data=tuple(args.extra_data))  # fmt: skip
        result = run_check(config)
        lines = summary_lines(result) or ["no duplicates, metadata conflicts or shortcuts found"]
        for label, v in result["channel_order"].items():
            print(f"colours of {label}: {v['verdict']} ({v['reason']})")
        print("\n".join(lines))
        print(f"data check of {result['n_images']} images in {result['seconds']} s: "
              f"{Path(args.out) / 'data_check.html'} (open it in a browser), data_check.json")  # fmt: skip
        return 0

    return run_cli(_main)
