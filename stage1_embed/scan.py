"""Locate every CSV row's image, read its header, and build the manifest table."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .content import content_digests
from .crosscheck import Disagreement, cross_check
from .errors import DataError, ImageReadError
from .sources import ImageKey, ImageRef, ImageSource, ProbeResult

logger = logging.getLogger(__name__)
_LISTED = 10


@dataclass
class ScanResult:
    """The manifest plus what extraction needs: where each readable image is."""

    manifest: pd.DataFrame
    refs: dict[ImageKey, ImageRef] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)
    n_dropped_missing: int = 0
    contents: dict[ImageKey, str] = field(default_factory=dict)  # sha256 of each image's bytes


def metadata_only_manifest(table: pd.DataFrame) -> ScanResult:
    """A manifest for a run without images: every row is usable, nothing was read."""
    manifest = table.assign(
        source_format=None,
        relative_path=None,
        width=pd.NA,
        height=pd.NA,
        file_size=pd.NA,
        content_sha256=None,
        read_status="not_read",
        read_error=None,
    )
    return ScanResult(manifest)


def scan_dataset(
    table: pd.DataFrame, source: ImageSource, *, skip_missing: bool = False, threads: int = 8,
    out: Path | None = None,
) -> ScanResult:  # fmt: skip
    """Index, probe and content-hash the images of ``table`` (digests remembered in ``out``,
    when given); refuse missing images unless ``skip_missing``."""
    wanted = {s: set(g["image_name"]) for s, g in table.groupby("split")}
    refs = source.index(wanted)
    keys = list(zip(table["split"], table["image_name"], strict=True))
    missing = [k for k in keys if k not in refs]
    if missing and not skip_missing:
        raise DataError(_missing_message(missing, source))
    if missing:
        logger.warning(
            "%d of %d images are missing from %s; the run is restricted to the %d present "
            "(--skip-missing).",
            len(missing),
            len(keys),
            source.root,
            len(keys) - len(missing),
        )
    with ThreadPoolExecutor(threads) as pool:
        probes = dict(zip(refs, pool.map(lambda r: _probe(source, r), refs.values()), strict=True))
    digests = content_digests(source, refs, out, threads)
    manifest = _manifest(table, keys, refs, probes, digests, source.format_name)
    headers = {k: p.header_metadata for k, p in probes.items() if isinstance(p, ProbeResult)}
    usable = {k: r for k, r in refs.items() if isinstance(probes[k], ProbeResult)}
    return ScanResult(manifest, usable, cross_check(table, headers), len(missing), digests)


def _probe(source: ImageSource, ref: ImageRef) -> ProbeResult | ImageReadError:
    try:
        return source.probe(ref)
    except ImageReadError as err:
        return err


def _manifest(
    table: pd.DataFrame,
    keys: list[ImageKey],
    refs: dict[ImageKey, ImageRef],
    probes: dict[ImageKey, ProbeResult | ImageReadError],
    digests: dict[ImageKey, str],
    format_name: str,
) -> pd.DataFrame:
    names = ("relative_path", "width", "height", "file_size", "content_sha256", "read_status",
             "read_error")  # fmt: skip
    columns: dict[str, list[Any]] = {c: [] for c in names}
    for key in keys:
        ref, probe = refs.get(key), probes.get(key)
        ok = isinstance(probe, ProbeResult)
        columns["relative_path"].append(ref.relative_path if ref else None)
        columns["file_size"].append(ref.file_size if ref else None)
        columns["content_sha256"].append(digests.get(key))
        columns["width"].append(probe.width if isinstance(probe, ProbeResult) else None)
        columns["height"].append(probe.height if isinstance(probe, ProbeResult) else None)
        columns["read_status"].append("ok" if ok else ("failed" if ref else "missing"))
        columns["read_error"].append(str(probe) if isinstance(probe, ImageReadError) else None)
    out = table.reset_index(drop=True).assign(source_format=format_name, **columns)
    for column in ("width", "height", "file_size"):
        out[column] = out[column].astype("Int64")
    return out


def _missing_message(missing: list[ImageKey], source: ImageSource) -> str:
    listed = ", ".join(f"{split}/{name}" for split, name in missing[:_LISTED])
    more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    return (
        f"{len(missing)} image(s) listed in the CSV are missing from {source.describe()}: "
        f"{listed}{more}. Add the files, fix the CSV, point --images at the right folder, or pass "
        "--skip-missing to run on the images present (the run then says how many were dropped)."
    )
