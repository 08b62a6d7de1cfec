"""TFRecord shards of ``tf.train.Example`` records with at least ``image`` and ``image_name``.

The ``tfrecord`` package parses the Example protos; record framing is read here because its reader
neither checks the CRCs nor exposes byte offsets, and we need both: corrupt shards must be named, and
DataLoader workers read single records by offset. The package is imported where it is used: its
``__init__`` imports torch, which a JPEG or DICOM reader (stage 2's thumbnails) must not pay for.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ..decode import DEFAULT_MAX_PIXELS, DecodedImage, check_pixel_limit, decode_image_bytes
from ..errors import DataError, ImageReadError
from .base import SHARD_KEY, ImageKey, ImageRef, ImageSource, ProbeResult

PATTERNS = ("*.tfrec", "*.tfrecord")
_HEADER = 12  # uint64 length + uint32 masked crc of the length


class TFRecordSource(ImageSource):
    format_name = "tfrecord"

    def __init__(self, root: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(root, max_pixels)
        self._probes: dict[ImageKey, ProbeResult | ImageReadError] = {}

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return bool(shard_paths(root))

    def index(self, wanted: Mapping[str, set[str]]) -> dict[ImageKey, ImageRef]:
        found: dict[ImageKey, ImageRef] = {}
        for path in shard_paths(self.root):
            for offset, length, payload in iter_records(path):
                example = parse_example(payload, path, offset)
                name = _bytes_feature(example, "image_name", path, offset).decode("utf-8")
                split = _split_of(path, name, wanted)
                if split is None:
                    continue
                key = (split, name)
                if key in found:
                    raise DataError(
                        f"TFRecord image_name {name!r} appears twice ({found[key].relative_path} "
                        f"and {path.name}); remove the duplicate record or shard."
                    )
                rel = path.relative_to(self.root).as_posix()
                found[key] = ImageRef(name, split, rel, length, offset, length)
                self._probes[key] = self._probe_example(example, path, offset)
        return found

    def read_bytes(self, ref: ImageRef) -> bytes:
        path = self.root / ref.relative_path
        with path.open("rb") as fh:
            fh.seek(ref.offset)
            payload = fh.read(ref.length)
        return _bytes_feature(parse_example(payload, path, ref.offset), "image", path, ref.offset)

    def probe(self, ref: ImageRef) -> ProbeResult:
        probe = self._probes[(ref.split, ref.image_name)]
        if isinstance(probe, ImageReadError):
            raise probe
        check_pixel_limit(probe.width, probe.height, self.max_pixels)
        return probe

    def decode(self, data: bytes, min_side: int | None = None) -> DecodedImage:
        return decode_image_bytes(data, min_side=min_side, max_pixels=self.max_pixels)

    def _probe_example(self, example: Any, path: Path, offset: int) -> ProbeResult | ImageReadError:
        image = _bytes_feature(example, "image", path, offset)
        try:
            with Image.open(io.BytesIO(image)) as img:
                width, height = img.size
        except Exception as err:  # any PIL failure here is a per-image failure, reported later
            return ImageReadError(f"the record's image bytes are not a readable image ({err})")
        return ProbeResult(width, height, {**_int_features(example), SHARD_KEY: path.name})


def shard_paths(root: Path) -> list[Path]:
    """All TFRecord shards directly in ``root``, sorted by name."""
    if not root.is_dir():
        return []
    return sorted({p for pattern in PATTERNS for p in root.glob(pattern)})


def iter_records(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield (payload offset, payload length, payload) for each record, checking both CRCs."""
    from tfrecord.writer import TFRecordWriter

    with path.open("rb") as fh:
        index = 0
        while header := fh.read(_HEADER):
            if len(header) < _HEADER:
                raise _corrupt(path, index, "the file ends inside a record header (truncated)")
            length_bytes, length_crc = header[:8], header[8:]
            if TFRecordWriter.masked_crc(length_bytes) != length_crc:
                raise _corrupt(path, index, "the record length fails its CRC check")
            (length,) = struct.unpack("<Q", length_bytes)
            offset = fh.tell()
            payload = fh.read(length)
            data_crc = fh.read(4)
            if len(payload) < length or len(data_crc) < 4:
                raise _corrupt(path, index, "the file ends inside a record (truncated)")
            if TFRecordWriter.masked_crc(payload) != data_crc:
                raise _corrupt(path, index, "the record data fails its CRC check")
            yield offset, length, payload
            index += 1


def parse_example(payload: bytes, path: Path, offset: int) -> Any:
    from tfrecord import example_pb2

    example = example_pb2.Example()
    try:
        example.ParseFromString(payload)
    except Exception as err:  # protobuf raises its own DecodeError type
        raise DataError(
            f"TFRecord {path} at byte {offset}: not a tf.train.Example ({err}); re-create the shard."
        ) from err
    return example


def _bytes_feature(example: Any, key: str, path: Path, offset: int) -> bytes:
    feature = example.features.feature
    if key not in feature or not feature[key].bytes_list.value:
        raise DataError(
            f"TFRecord {path} at byte {offset}: the record has no bytes feature {key!r} (it has "
            f"{sorted(feature.keys())}). Records need 'image' (JPEG bytes) and 'image_name'."
        )
    return bytes(feature[key].bytes_list.value[0])


def _int_features(example: Any) -> dict[str, int]:
    feature = example.features.feature
    return {
        key: int(value.int64_list.value[0])
        for key, value in feature.items()
        if value.int64_list.value
    }


def _split_of(path: Path, name: str, wanted: Mapping[str, set[str]]) -> str | None:
    """A shard named train*/test* decides; otherwise the CSV that lists the image does."""
    for split in wanted:
        if path.name.startswith(split):
            return split if name in wanted[split] else None
    return next((split for split, names in wanted.items() if name in names), None)


def _corrupt(path: Path, index: int, what: str) -> DataError:
    return DataError(
        f"TFRecord {path} is corrupt at record {index}: {what}. Re-copy or re-create the shard; "
        "records before it are fine."
    )
