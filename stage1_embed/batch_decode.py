"""JPEG decoding in batches with torchvision on the model's device (nvJPEG on CUDA).

Workers only read the stored bytes (and the header, for the pixel limit); the main process hands
a whole batch of JPEG bitstreams to ``torchvision.io.decode_jpeg(..., device=...)``, resizes and
crops on the device, and the uint8 batch is already where the model is. Images that are not
plain JPEGs (PNG, DICOM other than baseline JPEG, CMYK) and any that torchvision refuses are
decoded on the CPU as before, one by one, so a bad file is still a per-image failure.

Pixels differ slightly from the CPU path (another JPEG decoder and resize kernel, no DCT draft
scaling), so the decode path is part of the embeddings' settings digest.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from .decode import check_pixel_limit
from .errors import ImageReadError
from .extract import Batch, ImageDataset
from .preprocess import Preprocess
from .sources import ImageRef, ImageSource

logger = logging.getLogger(__name__)
_JPEG_MAGIC = b"\xff\xd8\xff"


def resolve_decode(requested: str, device: str, source_format: str | None) -> str:
    """'auto': torchvision on CUDA for JPEG payloads (folders, TFRecords), else PIL on the CPU."""
    if requested != "auto":
        return requested
    return (
        "torchvision"
        if device.startswith("cuda") and source_format in ("jpeg", "tfrecord")
        else "pil"
    )


@dataclass
class RawBatch:
    """A batch as workers hand it over: JPEG bitstreams, or images they decoded themselves."""

    encoded: list[tuple[int, torch.Tensor]]  # (index, uint8 1-D bitstream)
    decoded: list[tuple[int, torch.Tensor]]  # (index, uint8 (3, S, S)) from the CPU path
    failures: list[tuple[int, str]]


class RawDataset(ImageDataset):
    """Reads bytes; JPEG bitstreams are passed on for batch decoding, others decoded here."""

    def __getitem__(self, index: int) -> tuple[int, str, torch.Tensor | None, str]:  # type: ignore[override]
        ref = self.refs[index]
        try:
            data = self.source.read_bytes(ref)
        except OSError as err:
            return index, "failed", None, f"cannot read the file ({err})"
        if data[:3] == _JPEG_MAGIC:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    check_pixel_limit(*img.size, self.source.max_pixels)
                    if img.mode == "RGB" or img.mode == "L":
                        return (
                            index,
                            "encoded",
                            torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            "",
                        )
            except ImageReadError as err:
                return index, "failed", None, str(err)
            except OSError:
                pass  # unreadable header: the CPU path below reports why
        item_index, pixels, error = super().__getitem__(index)
        return item_index, "decoded" if pixels is not None else "failed", pixels, error


def collate_raw(items: list[tuple[int, str, torch.Tensor | None, str]]) -> RawBatch:
    batch = RawBatch([], [], [])
    for index, kind, tensor, error in items:
        if kind == "encoded" and tensor is not None:
            batch.encoded.append((index, tensor))
        elif kind == "decoded" and tensor is not None:
            batch.decoded.append((index, tensor))
        else:
            batch.failures.append((index, error))
    return batch


class BatchDecoder:
    """RawBatch -> Batch: one ``decode_jpeg`` call per batch on ``device``, then resize/crop."""

    def __init__(
        self, source: ImageSource, refs: Sequence[ImageRef], preprocess: Preprocess,
        device: torch.device,
    ) -> None:  # fmt: skip
        self.source, self.refs, self.preprocess, self.device = source, refs, preprocess, device
        self.fallback = ImageDataset(source, refs, preprocess)

    def __call__(self, raw: RawBatch) -> Batch:
        images: dict[int, torch.Tensor] = {i: t.to(self.device) for i, t in raw.decoded}
        failures = list(raw.failures)
        for index, decoded in self._decode(
            [i for i, _ in raw.encoded], [t for _, t in raw.encoded]
        ):
            if isinstance(decoded, torch.Tensor):
                if self.source.swapped(self.refs[index].split):  # as ImageSource.load does
                    decoded = decoded.flip(0)
                images[index] = self.preprocess(decoded)
            else:  # torchvision refused it: the CPU decoder gets its chance, and the last word
                _, pixels, error = self.fallback[index]
                if pixels is None:
                    failures.append((index, error))
                else:
                    images[index] = pixels.to(self.device)
        order = sorted(images)
        pixels = torch.stack([images[i] for i in order]) if order else None
        return Batch(order, pixels, sorted(failures))

    def _decode(
        self, indices: list[int], data: list[torch.Tensor]
    ) -> list[tuple[int, torch.Tensor | None]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        if not data:
            return []
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            return list(zip(indices, decoded, strict=True))
        except RuntimeError:  # one bad bitstream fails the batch call: retry one by one
            out: list[tuple[int, torch.Tensor | None]] = []
            for index, item in zip(indices, data, strict=True):
                try:
                    out.append(
                        (index, decode_jpeg(item, mode=ImageReadMode.RGB, device=self.device))
                    )
                except RuntimeError:
                    out.append((index, None))
            return out
