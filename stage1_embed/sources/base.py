"""The interface every image source (JPEG folder, DICOM folder, TFRecord shards) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from ..decode import DEFAULT_MAX_PIXELS, DecodedImage

ImageKey = tuple[str, str]  # (split, image_name)
# Header key naming the TFRecord shard: integer codes may be factorised per shard.
SHARD_KEY = "shard"


@dataclass(frozen=True)
class ImageRef:
    """Where one image's bytes live. ``relative_path`` is relative to the source root."""

    image_name: str
    split: str
    relative_path: str
    file_size: int
    offset: int = -1  # byte offset of a TFRecord record's payload
    length: int = -1


@dataclass(frozen=True)
class ProbeResult:
    """What a cheap header read tells: original size and any metadata stored with the image."""

    width: int
    height: int
    header_metadata: Mapping[str, Any] = field(default_factory=dict)


class ImageSource(ABC):
    """Finds images of a dataset and turns their stored bytes into RGB images."""

    format_name: ClassVar[str]

    def __init__(self, root: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels
        # split -> "bgr" where that split's files store red and blue swapped (colour.py)
        self.channel_orders: dict[str, str] = {}

    def swapped(self, split: str) -> bool:
        """True when ``split``'s images store red and blue swapped, so :meth:`load` swaps them."""
        return self.channel_orders.get(split) == "bgr"

    def load(self, ref: ImageRef, min_side: int | None = None) -> DecodedImage:
        """One image as RGB in its natural colours: the one place every reader (embedding,
        thumbnails, experts, scoring) turns a stored image into pixels, so all see the same."""
        decoded = self.decode(self.read_bytes(ref), min_side=min_side)
        if not self.swapped(ref.split):
            return decoded
        red, green, blue = decoded.image.split()
        image = Image.merge("RGB", (blue, green, red))
        return DecodedImage(image, decoded.original_width, decoded.original_height)

    @classmethod
    @abstractmethod
    def looks_like(cls, root: Path) -> bool:
        """True when ``root`` holds images in this source's layout."""

    @abstractmethod
    def index(self, wanted: Mapping[str, set[str]]) -> dict[ImageKey, ImageRef]:
        """Locate the images of each split whose names are in ``wanted[split]``."""

    def read_bytes(self, ref: ImageRef) -> bytes:
        """The stored bytes of one image."""
        return (self.root / ref.relative_path).read_bytes()

    @abstractmethod
    def probe(self, ref: ImageRef) -> ProbeResult:
        """Read only the header: size, and metadata fields that can be cross-checked."""

    @abstractmethod
    def decode(self, data: bytes, min_side: int | None = None) -> DecodedImage:
        """Decode stored bytes to RGB uint8 as the format says (``min_side`` allows reduced-size
        JPEG decoding); :meth:`load` also undoes a split's swapped channels."""

    def describe(self) -> str:
        return f"{self.format_name} images under {self.root}"
