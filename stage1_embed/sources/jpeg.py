"""JPEG/PNG folders: ``<root>/train/<image_name>.jpg`` and ``<root>/test/...`` (the competition's
layout), or a flat folder with the images directly inside (e.g. ``ISIC_2019_Training_Input/``).
Extensions match in any letter case (``ISIC_0000000.JPG``)."""

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
        return any(_has_image(folder) for folder in (root / "train", root / "test", root))

    def index(self, wanted: Mapping[str, set[str]]) -> dict[ImageKey, ImageRef]:
        found: dict[ImageKey, ImageRef] = {}
        for split, names in wanted.items():
            folder = self.root / split
            if not _has_image(folder):  # a flat folder: every split's images are in the root
                folder = self.root
            on_disk = _files_by_stem(folder)
            for name in names:
                path = on_disk.get(name)
                if path is not None:
                    found[(split, name)] = ImageRef(
                        name, split, str(path.relative_to(self.root)), path.stat().st_size
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


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and path.is_file()


def _has_image(folder: Path) -> bool:
    return folder.is_dir() and any(_is_image(p) for p in folder.iterdir())


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Map image name -> path for the images directly inside ``folder``: each file by its stem
    (when one stem has several files, the extension earliest in EXTENSIONS wins: .jpg before
    .jpeg before .png) and by its full file name, so ``ISIC_1.jpg`` in a CSV finds ISIC_1.jpg and
    a bare folder's ``Z.png`` (named so beside Z.jpg) finds its own file."""
    if not folder.is_dir():
        return {}
    best: dict[str, tuple[int, Path]] = {}
    images = [path for path in folder.iterdir() if _is_image(path)]
    for path in images:
        rank = EXTENSIONS.index(path.suffix.lower())
        if path.stem not in best or rank < best[path.stem][0]:
            best[path.stem] = (rank, path)
    by_name = {path.name: path for path in images}
    return by_name | {stem: path for stem, (_, path) in best.items()}
