"""Resize and crop exactly as timm's eval transform does, but return uint8 tensors.

timm's ``create_transform`` ends in float normalisation; here workers ship uint8 (4x less
inter-process traffic) and normalisation happens on the batch, on the model's device. The JPEG
decoder is told the final scale first (draft mode), which matters for 6000x4000 originals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class Preprocess:
    """Shorter side -> ``scale_size``, centre crop ``size`` x ``size``, uint8 CHW tensor."""

    size: int
    scale_size: int
    interpolation: str

    @classmethod
    def from_data_config(cls, data_config: dict[str, Any]) -> Preprocess:
        size = int(data_config["input_size"][-1])
        crop_pct = float(data_config.get("crop_pct") or 1.0)
        return cls(
            size, math.floor(size / crop_pct), str(data_config.get("interpolation", "bicubic"))
        )

    @property
    def min_side(self) -> int:
        """The decoder may reduce the image as long as its shorter side stays this large."""
        return self.scale_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        mode = InterpolationMode(self.interpolation)
        resized = F.resize(image, [self.scale_size], interpolation=mode, antialias=True)
        return F.pil_to_tensor(F.center_crop(resized, [self.size, self.size]))
