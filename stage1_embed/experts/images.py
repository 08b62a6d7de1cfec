"""Images for fine-tuning: decoded once to a square of the recipe's size, then augmented per sample.

Each image is decoded by its stage 1 source (JPEG, DICOM or TFRecord; draft mode for large
originals), its shorter side resized to the image size and the centre cropped. When the whole set
fits in ``max_memory_gb`` it is held in memory (decoded once for all folds and epochs); otherwise
images are decoded again on each access (use DataLoader workers then).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import ImageReadError
from ..preprocess import Preprocess
from ..progress import progress_bar
from ..sources import ImageRef, ImageSource
from .recipe import Recipe

logger = logging.getLogger(__name__)


class ImageStore:
    """uint8 (3, S, S) images by row index, from their sources."""

    def __init__(
        self, items: Sequence[tuple[ImageSource, ImageRef]], size: int, max_memory_gb: float = 8.0,
        progress: bool = True,
    ) -> None:  # fmt: skip
        self.items, self.size = list(items), size
        self.preprocess = Preprocess(size=size, scale_size=size, interpolation="bicubic")
        self.cache: torch.Tensor | None = None
        needed = len(self.items) * 3 * size * size / 2**30
        if needed <= max_memory_gb:
            self.cache = torch.empty((len(self.items), 3, size, size), dtype=torch.uint8)
            bar = progress_bar(
                len(self.items), f"decoding {len(self.items)} images at {size}px", progress
            )
            for index in range(len(self.items)):
                self.cache[index] = self._decode(index)
                bar.update(1)
            bar.close()
        else:
            logger.info("images need %.1f GB at %d px (> %.1f): decoded on each access", needed,
                        size, max_memory_gb)  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.cache[index] if self.cache is not None else self._decode(index)

    def _decode(self, index: int) -> torch.Tensor:
        source, ref = self.items[index]
        try:
            decoded = source.load(ref, min_side=self.size)
        except (ImageReadError, OSError) as err:
            raise ImageReadError(f"{ref.split}/{ref.image_name}: {err}") from err
        return self.preprocess(decoded.image)


def augmentation(recipe: Recipe) -> v2.Compose:
    """Random scale crops, flips and quarter turns (a lesion has no up), colour jitter."""
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(recipe.image_size, scale=(recipe.scale_min, 1.0), antialias=True)
    ]
    if recipe.rotate:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), _RandomQuarterTurn()]
    if recipe.color > 0:
        c = recipe.color
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c, hue=c / 10))
    return v2.Compose(steps)


class _RandomQuarterTurn(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        turns = int(torch.randint(0, 4, ()).item())
        return torch.rot90(image, turns, dims=(-2, -1)) if turns else image


class TrainingSet(Dataset):
    """(augmented uint8 image, label) for the given store rows."""

    def __init__(
        self, store: ImageStore, rows: np.ndarray, labels: np.ndarray, recipe: Recipe
    ) -> None:
        self.store, self.rows, self.labels = store, list(rows), list(labels)
        self.augment = augmentation(recipe)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float]:
        return self.augment(self.store[self.rows[index]]), float(self.labels[index])
