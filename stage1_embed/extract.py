"""Pure compute: image refs -> uint8 batches (parallel workers) -> pooled embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import ImageReadError
from .preprocess import Preprocess
from .sources import ImageRef, ImageSource

TTA_VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270")


@dataclass
class Batch:
    """Decoded images of one batch, plus the images of it that failed to read."""

    indices: list[int]
    pixels: torch.Tensor | None  # uint8 (n, 3, H, W)
    failures: list[tuple[int, str]]


class ImageDataset(Dataset):
    """Reads and decodes one image per item; a bad image becomes a recorded failure, not a crash."""

    def __init__(
        self, source: ImageSource, refs: Sequence[ImageRef], preprocess: Preprocess
    ) -> None:
        self.source, self.refs, self.preprocess = source, list(refs), preprocess

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        ref = self.refs[index]
        try:
            decoded = self.source.load(ref, min_side=self.preprocess.min_side)
            return index, self.preprocess(decoded.image), ""
        except ImageReadError as err:
            return index, None, str(err)
        except OSError as err:
            return index, None, f"cannot read the file ({err})"


def collate(items: list[tuple[int, torch.Tensor | None, str]]) -> Batch:
    good = [(i, t) for i, t, _ in items if t is not None]
    failures = [(i, e) for i, t, e in items if t is None]
    pixels = torch.stack([t for _, t in good]) if good else None
    return Batch([i for i, _ in good], pixels, failures)


def make_loader(
    dataset: Dataset, batches: list[list[int]], num_workers: int, pin_memory: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:  # fmt: skip
    """Batches in the given order (so chunk boundaries and batch contents are deterministic)."""
    extra: dict[str, Any] = (
        {"prefetch_factor": 4, "persistent_workers": False} if num_workers else {}
    )
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_fn or collate,
        pin_memory=pin_memory,
        **extra,
    )


class Embedder:
    """Normalises uint8 batches on the device and runs the frozen model (optionally with TTA)."""

    def __init__(
        self,
        model: torch.nn.Module,
        data_config: dict[str, Any],
        device: torch.device,
        tta: Sequence[str] = (),
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        unknown = set(tta) - set(TTA_VIEWS)
        if unknown:
            raise ValueError(f"unknown TTA views {sorted(unknown)}; choose from {TTA_VIEWS}")
        self.device, self.tta, self.amp_dtype = device, tuple(tta), amp_dtype
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(data_config["mean"], device=device).view(shape) * 255
        self.std = torch.tensor(data_config["std"], device=device).view(shape) * 255

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        x = pixels.to(self.device, non_blocking=True).float()
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            features = self.model(x).float()
            for view in self.tta:
                features += self.model(_view(x, view)).float()
        features /= 1 + len(self.tta)
        return features.cpu().numpy()


def _view(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "hflip":
        return torch.flip(x, dims=(3,))
    if name == "vflip":
        return torch.flip(x, dims=(2,))
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}[name]
    return torch.rot90(x, turns, dims=(2, 3)).contiguous(memory_format=torch.channels_last)


def plan_batches(n_images: int, chunk_size: int, batch_size: int) -> list[list[list[int]]]:
    """Chunks of image indices, each split into batches that never cross a chunk boundary."""
    chunks = []
    for start in range(0, n_images, chunk_size):
        stop = min(start + chunk_size, n_images)
        chunks.append(
            [list(range(b, min(b + batch_size, stop))) for b in range(start, stop, batch_size)]
        )
    return chunks
