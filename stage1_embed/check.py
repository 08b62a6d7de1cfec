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
from PIL import Image

from .colour import judge_source
from .common import atomic_write_text
from .config import Stage1Config
from .data_check import (
    metadata_conflicts,
    near_duplicates,
    same_lesion_duplicates,
    shift,
    shortcut,
    summary_lines,
    write_data_check,
)
from .errors import DataError
from .extra import detect_extra, read_extra_table
from .folds import write_same_lesion_links
from .metadata import load_metadata
from .pages import page_environment
from .same_lesion import NEIGHBOURS, SIDE
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
    started_pairs = time.perf_counter()
    lesion_pairs, searched = _same_lesion(every, scans, out, extras)
    pairs = near_duplicates(every) + lesion_pairs
    write_same_lesion_links(out, pairs)
    searched["seconds"] = round(time.perf_counter() - started_pairs, 1)
    result = {"dataset": config.dataset_name, "n_images": int((every["read_status"] == "ok").sum()),
              "n_missing": sum(s.n_dropped_missing for _, s in scans.values()),
              "channel_order": colours, "near_duplicates": pairs, "same_lesion": searched,
              "metadata": metadata_conflicts(scans["main"][1].manifest),
              "shortcut": shortcut(scans["main"][1].manifest),
              "shift": _shifts(out, {name: s.manifest for name, (_, s) in scans.items()}, extras)}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_data_check(out, result)
    write_check_page(out, result, scans)
    return result


def _same_lesion(
    every: pd.DataFrame, scans: dict[str, tuple[ImageSource, ScanResult]], out: Path,
    extras: dict[str, Path],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Different files of one lesion, among the images stage 1 has embedded into OUT (and into
    the extra sets' folders with the same backbone), and how they were searched for; none
    without embeddings (the log and the page say so)."""
    folders = {"main": out} | extras
    vectors, slug = _vectors(every, folders)
    if vectors is None:
        reason = (f"not searched: no embeddings in {out} (run stage 1 into it first); only "
                  "identical files were compared")  # fmt: skip
        logger.warning("same-lesion check %s", reason)
        return [], {"searched": False, "reason": reason}

    def load(row: int) -> Image.Image | None:
        name, split, image = every.iloc[row][["source", "split", "image_name"]]
        ref = scans[name][1].refs.get((split, image))
        return None if ref is None else scans[name][0].load(ref, min_side=SIDE).image

    logger.info("same-lesion check on %s embeddings: keypoints of each image's nearest images",
                slug)  # fmt: skip
    embedded = int((~np.isnan(vectors).any(axis=1)).sum())
    reason = (f"{embedded} embedded image(s) searched: each one's {NEIGHBOURS} nearest by {slug} "
              f"cosine among images of the same sex, age and site, checked by keypoints")  # fmt: skip
    return same_lesion_duplicates(every, vectors, load), {"searched": True, "reason": reason}


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
        both = pd.concat([a.assign(source="a"), b.assign(source="b")], ignore_index=True)
        is_b = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
        vectors, slug = _vectors(both, {"a": folder_a, "b": folder_b})
        keep = ~np.isnan(vectors).any(axis=1) if vectors is not None else np.ones(len(both), bool)
        found[label] = shift(both[keep], is_b[keep], None if vectors is None else vectors[keep])
        found[label]["backbone"] = slug
    return found


def _vectors(rows: pd.DataFrame, folders: dict[str, Path]) -> tuple[np.ndarray | None, str | None]:
    """Each row's embedding from the stage 1 outputs of its source's folder (``rows["source"]``;
    NaN where it has none), from the first backbone every folder has; (None, None) if none."""
    slugs = sorted(
        p.stem for p in (folders[rows["source"].iloc[0]] / "embeddings").glob("*.parquet")
    )
    used = [folders[name] for name in rows["source"].unique()]
    slugs = [s for s in slugs if all(embeddings_path(f, s).is_file() for f in used)]
    if not slugs:
        return None, None
    vectors = None
    for name, part in rows.groupby("source", sort=False):
        table = read_embeddings(embeddings_path(folders[name], slugs[0]))
        if vectors is None:
            vectors = np.full((len(rows), table.vectors.shape[1]), np.nan, np.float32)
        index = pd.MultiIndex.from_frame(table.keys[["split", "image_name"]])
        where = index.get_indexer(pd.MultiIndex.from_frame(part[["split", "image_name"]]))
        at = rows.index.get_indexer(part.index)
        vectors[at[where >= 0]] = table.vectors[where[where >= 0]]
    return vectors, slugs[0]


def write_check_page(
    out: Path, result: dict[str, Any], scans: dict[str, tuple[ImageSource, ScanResult]]
) -> Path:
    """``OUT/data_check.html``: each finding with its images (thumbnails embedded)."""
    pairs = sorted(result["near_duplicates"], key=lambda p: p["same_patient"])[:SHOWN_PAIRS]
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
