"""Decode image bytes (JPEG, PNG, DICOM) into RGB uint8, whatever the source stored."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageReadError

DEFAULT_MAX_PIXELS = 150_000_000  # 6000x4000 originals are 24 MP; 150 MP leaves headroom.
# We apply our own limit before decoding; PIL's own guard would fire at a different size.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus the size of the stored original (before any reduced decoding)."""

    image: Image.Image
    original_width: int
    original_height: int


def decode_image_bytes(
    data: bytes, *, min_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode an encoded raster image (JPEG, PNG, TIFF...) to RGB.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter
    side stays at least ``min_side`` pixels (PIL draft mode): far faster on 6000x4000 originals.
    """
    if not data:
        raise ImageReadError("the file is empty (0 bytes); re-export or re-download it")
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        check_pixel_limit(width, height, max_pixels)
        if min_side and img.format == "JPEG":
            img.draft("RGB", _draft_request(width, height, min_side))
        img.load()
    except UnidentifiedImageError as err:
        raise ImageReadError("not an image file (unrecognised format); check the file") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"cannot decode the image ({err}); the file is truncated or corrupt"
        ) from err
    return DecodedImage(to_rgb(img), width, height)


def check_pixel_limit(width: int, height: int, max_pixels: int) -> None:
    """Refuse images larger than ``max_pixels`` before decoding them (decompression-bomb guard)."""
    if width * height > max_pixels:
        raise ImageReadError(
            f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (decompression-bomb guard); resize it or raise the limit (python -m stage1_embed --max-pixels N)"
        )


def _draft_request(width: int, height: int, min_side: int) -> tuple[int, int]:
    """Size to ask draft() for so that the shorter decoded side is still >= ``min_side``."""
    scale = min_side / max(1, min(width, height))
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (grayscale, palette, CMYK, 16-bit, alpha) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(array_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def array_to_uint8(pixels: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Map integer (8-32 bit) or float pixels to uint8 by their bit depth, not per-image contrast."""
    if pixels.dtype == np.uint8:
        return pixels
    if np.issubdtype(pixels.dtype, np.floating):
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        if low >= 0 and high <= 1:
            return np.round(np.nan_to_num(pixels) * 255).astype(np.uint8)
        span = high - low if high > low else 1.0
        return np.round((np.nan_to_num(pixels, nan=low) - low) * (255.0 / span)).astype(np.uint8)
    if bits is None:
        bits = 8 if pixels.max(initial=0) <= 255 else 16
    full_scale = float(2**bits - 1)
    scaled = np.clip(pixels.astype(np.float64), 0, full_scale) * (255.0 / full_scale)
    return np.round(scaled).astype(np.uint8)


def rgb_array(pixels: np.ndarray, bits: int | None = None) -> Image.Image:
    """Turn a decoded pixel array (H,W), (H,W,1), (H,W,3) or (H,W,4) into an RGB image."""
    pixels = array_to_uint8(pixels, bits)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return Image.fromarray(pixels, "L").convert("RGB")
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), "RGB")
    raise ImageReadError(f"unsupported pixel array shape {pixels.shape}; expected one RGB frame")
