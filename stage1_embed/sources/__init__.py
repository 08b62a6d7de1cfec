"""Image sources by format name, and detection of which one a dataset folder uses."""

from __future__ import annotations

import logging
from pathlib import Path

from ..decode import DEFAULT_MAX_PIXELS
from ..errors import ConfigError, DataError
from .base import ImageKey, ImageRef, ImageSource, ProbeResult
from .dicom import DicomFolderSource
from .jpeg import JpegFolderSource
from .tfrecord import TFRecordSource

logger = logging.getLogger(__name__)

SOURCES: dict[str, type[ImageSource]] = {
    "jpeg": JpegFolderSource,
    "dicom": DicomFolderSource,
    "tfrecord": TFRecordSource,
}
# Where each format lives inside a Kaggle-layout dataset folder, in order of preference
# (JPEG first: the smallest and fastest to decode when a download holds all three).
DEFAULT_LOCATIONS = (("jpeg", "jpeg"), ("tfrecord", "tfrecords"), ("dicom", "."), ("jpeg", "."))

__all__ = ["SOURCES", "ImageKey", "ImageRef", "ImageSource", "ProbeResult", "create_source"]


def create_source(
    data_dir: Path,
    images_dir: Path | None = None,
    image_format: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    channel_orders: dict[str, str] | None = None,
) -> ImageSource:
    """The image source of a dataset: ``image_format`` forces one, 'auto' detects it;
    ``channel_orders``: split -> stored channel order ('bgr': red and blue swapped)."""
    if image_format != "auto" and image_format not in SOURCES:
        raise ConfigError(
            f"Unknown image format {image_format!r}; choose one of {['auto', *SOURCES]}."
        )
    candidates = _candidates(Path(data_dir), images_dir)
    for name, root in candidates:
        if image_format in ("auto", name) and SOURCES[name].looks_like(root):
            logger.info("reading %s images from %s", name, root)
            source = SOURCES[name](root, max_pixels)
            source.channel_orders = dict(channel_orders or {})
            return source
    tried = ", ".join(f"{name} in {root}" for name, root in candidates)
    wanted = "any format" if image_format == "auto" else f"{image_format} images"
    raise DataError(
        f"No images found ({wanted}); looked for {tried}. Expected jpeg/train/<image_name>.jpg, "
        "train/<image_name>.dcm or tfrecords/*.tfrec; pass --images DIR to point at them, or "
        "--backbones none for a metadata-only run."
    )


def _candidates(data_dir: Path, images_dir: Path | None) -> list[tuple[str, Path]]:
    if images_dir is not None:
        return [(name, Path(images_dir)) for name in SOURCES]
    return [(name, (data_dir / sub) if sub != "." else data_dir) for name, sub in DEFAULT_LOCATIONS]
