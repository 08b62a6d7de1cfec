"""Resize and crop exactly as timm's eval transform does, but return uint8 tensors.

timm's ``create_transform`` ends in float normalisation; here workers ship uint8 (4x less
inter-process traffic) and normalisation happens on the batch, on the model's device. The JPEG
decoder is told the final scale first (draft mode), which matters for 6000x4000 originals.

Decoded PIL images are resized as uint8 tensors by torch, not by PIL: torch's vectorised uint8
antialiased resize gives PIL's pixels (at most 2 levels apart, on < 0.5% of them) in about half the
time (benchmarks/README.md), and the CPU and GPU decode paths then share one resize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

RESIZE_ENGINE = "torch-uint8"  # part of stage 1's provenance: the resize that made the pixels
# Filters torch resizes; the others (lanczos, box, hamming) stay with PIL.
TORCH_RESIZE_MODES = {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC,
                      InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT}  # fmt: skip


@dataclass(frozen=True)
class Preprocess:
    """timm's eval transform with uint8 output. ``crop_mode`` as in timm: 'center' resizes the
    shorter side to ``scale_size`` and crops the centre; 'squash' resizes to a square (aspect not
    kept, nothing cut off); 'border' fits the longer side and pads the rest with black."""

    size: int
    scale_size: int
    interpolation: str
    crop_mode: str = "center"
    colour_constancy: str = "none"  # or "shades-of-gray": see shades_of_gray

    @classmethod
    def from_data_config(cls, data_config: dict[str, Any]) -> Preprocess:
        size = int(data_config["input_size"][-1])
        crop_pct = float(data_config.get("crop_pct") or 1.0)
        interpolation = str(data_config.get("interpolation", "bicubic"))
        return cls(
            size,
            math.floor(size / crop_pct),
            interpolation,
            str(data_config.get("crop_mode") or "center"),
            str(data_config.get("colour_constancy") or "none"),
        )

    @property
    def min_side(self) -> int:
        """The decoder may reduce the image as long as its shorter side stays this large."""
        return self.scale_size

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image (CPU decode) or a uint8 CHW tensor on any device (torchvision decode)
        -> uint8 (3, size, size) tensor on the same device."""
        mode = InterpolationMode(self.interpolation)
        if isinstance(image, Image.Image) and mode in TORCH_RESIZE_MODES:
            image = pil_to_uint8_chw(image)
        height, width = (
            (image.height, image.width) if isinstance(image, Image.Image) else image.shape[-2:]
        )
        if self.crop_mode == "squash":
            target = [self.scale_size, self.scale_size]
        elif self.crop_mode == "border":
            scale = self.scale_size / max(height, width)
            target = [max(1, round(height * scale)), max(1, round(width * scale))]
        else:
            target = [self.scale_size]
        resized = F.resize(image, target, interpolation=mode, antialias=True)
        cropped = F.center_crop(resized, [self.size, self.size])
        pixels = F.pil_to_tensor(cropped) if isinstance(cropped, Image.Image) else cropped
        return shades_of_gray(pixels) if self.colour_constancy == "shades-of-gray" else pixels


SHADES_OF_GRAY_P = (
    6  # the Minkowski norm of Finlayson & Trezzi (2004); Barata et al. (2015) on dermoscopy
)


def shades_of_gray(pixels: torch.Tensor) -> torch.Tensor:
    """Colour constancy for one uint8 (3, H, W) image: each channel scaled so the image's
    illuminant, estimated as the channels' p-norm means, becomes grey (the ISIC 2019 winners'
    preprocessing: the same lesion under another lamp or camera gets the same colours). Written
    here because it is four tensor operations on the pixels stage 1 already holds, on any device."""
    values = pixels.float()
    illuminant = values.pow(SHADES_OF_GRAY_P).mean(dim=(1, 2)).pow(1 / SHADES_OF_GRAY_P)
    gain = illuminant.mean() / illuminant.clamp(min=1e-6)
    return (values * gain.view(3, 1, 1)).round().clamp(0, 255).to(torch.uint8)


def pil_to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) uint8 tensor with channels-last strides (no transpose copy),
    the layout torch's vectorised uint8 resize reads."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
