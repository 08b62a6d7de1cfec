"""Competition JPEG folders: ``<root>/train/<image_name>.jpg`` and ``<root>/test/...``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..decode import DecodedImage, check_pixel_limit, decode_image_bytes
from ..errors import ImageReadError
from .base import ImageKey, ImageRef, ImageSource, ProbeResult

EXTENSIONS = (".jpg", ".jpeg", ".png")


class JpegFolderSource(ImageSource):
    format_name = "jpeg"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any(
            next((root / split).glob(f"*{ext}"), None) is not None
            for split in ("train", "test")
            for ext in EXTENSIONS
        )

    def index(self, wanted: Mapping[str, set[str]]) -> dict[ImageKey, ImageRef]:
        found: dict[ImageKey, ImageRef] = {}
        for split, names in wanted.items():
            folder = self.root / split
            on_disk = _files_by_stem(folder)
            for name in names:
                path = on_disk.get(name)
                if path is not None:
                    found[(split, name)] = ImageRef(
                        name, split, f"{split}/{path.name}", path.stat().st_size
                    )
        return found

    def probe(self, ref: ImageRef) -> ProbeResult:
        path = self.root / ref.relative_path
        if ref.file_size == 0:
            raise ImageReadError("the file is empty (0 bytes); re-export or re-download it")
        try:
            with Image.open(path) as img:
                width, height = img.size
        except UnidentifiedImageError as err:
            raise ImageReadError("not an image file (unrecognised format); check the file") from err
        except OSError as err:
            raise ImageReadError(f"cannot read the image header ({err})") from err
        check_pixel_limit(width, height, self.max_pixels)
        return ProbeResult(width, height)

    def decode(self, data: bytes, min_side: int | None = None) -> DecodedImage:
        return decode_image_bytes(data, min_side=min_side, max_pixels=self.max_pixels)


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the images directly inside ``folder`` (first extension wins)."""
    if not folder.is_dir():
        return {}
    files: dict[str, Path] = {}
    for ext in reversed(EXTENSIONS):
        for path in folder.glob(f"*{ext}"):
            files[path.stem] = path
    return files
