"""Small JPEG thumbnails of chosen images, read through stage 1's own image sources.

Made on demand for the few hundred images a page shows, never for the whole dataset: at full
scale that would be 44,000 decodes and 150-300 MB kept for pages that show at most a few hundred
(the measured cost is in benchmarks/README.md, "Thumbnails"). Stage 2 asks for them here, so it
never opens an image file with code of its own, and every format (JPEG, DICOM, TFRecord, bare
folders) gives the thumbnail of the same pixels stage 1 embedded.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .colour import stored_orders
from .errors import DataError, ImageReadError
from .schema import read_manifest
from .sources import ImageRef, ImageSource, create_source

logger = logging.getLogger(__name__)
THUMBNAIL_SIDE = 128
QUALITY = 82


def make_thumbnails(
    features_dir: Path, images: Sequence[tuple[str, str]], side: int = THUMBNAIL_SIDE
) -> dict[tuple[str, str], bytes | str]:
    """JPEG bytes of at most ``side`` pixels per (split, image_name), or the reason there is none
    (a missing or unreadable image), read from where stage 1 read ``features_dir``'s images."""
    config_path = Path(features_dir) / "stage1_config.json"
    if not config_path.is_file():
        raise DataError(f"{features_dir} has no stage1_config.json: thumbnails need to know where "
                        "stage 1 read the images. Rerun stage 1 into that folder.")  # fmt: skip
    config = json.loads(config_path.read_text())
    manifest, provenance = read_manifest(features_dir)
    formats = set(manifest["source_format"].dropna()) - {"none"}
    if not formats:
        return {key: "no images (a metadata-only run)" for key in images}
    images_dir = config.get("images_dir")
    source = create_source(Path(config.get("data_dir_resolved") or config["data_dir"]), Path(images_dir) if images_dir else None,
                           formats.pop(), int(config.get("max_pixels") or 150_000_000),
                           stored_orders(provenance))  # fmt: skip
    wanted: dict[str, set[str]] = {}
    for split, name in images:
        wanted.setdefault(split, set()).add(name)
    refs = source.index(wanted)
    missing = {key: "image not found where stage 1 read it" for key in images if key not in refs}
    return missing | source_thumbnails(source, [refs[k] for k in images if k in refs], side)


def source_thumbnails(
    source: ImageSource, refs: Sequence[ImageRef], side: int = THUMBNAIL_SIDE,
    as_stored: bool = False,
) -> dict[tuple[str, str], bytes | str]:  # fmt: skip
    """A thumbnail (or why there is none) per (split, image_name) of ``refs``, in the colours
    stage 1 uses (``as_stored``: as the files store them, before any channel swap)."""
    out: dict[tuple[str, str], bytes | str] = {}
    for ref in refs:
        key = (ref.split, ref.image_name)
        try:
            if as_stored:
                decoded = source.decode(source.read_bytes(ref), min_side=side)
            else:
                decoded = source.load(ref, min_side=side)
        except (ImageReadError, OSError) as err:
            out[key] = f"unreadable: {err}"
            continue
        out[key] = _jpeg(decoded.image, side)
    return out


def _jpeg(image: Image.Image, side: int) -> bytes:
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()
