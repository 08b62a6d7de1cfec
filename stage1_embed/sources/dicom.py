"""Competition DICOM folders: ``<root>/train/<image_name>.dcm`` (RGB stored as JPEG-compressed YBR)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEGBaseline8Bit

from ..decode import DecodedImage, check_pixel_limit, decode_image_bytes, rgb_array
from ..errors import ImageReadError
from .base import ImageKey, ImageRef, ImageSource, ProbeResult

_SEX_CODES = {"M": "male", "F": "female"}
_AGE = re.compile(r"^(\d{1,3})Y$")


class DicomFolderSource(ImageSource):
    format_name = "dicom"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return any(
            next((root / split).glob("*.dcm"), None) is not None for split in ("train", "test")
        )

    def index(self, wanted: Mapping[str, set[str]]) -> dict[ImageKey, ImageRef]:
        found: dict[ImageKey, ImageRef] = {}
        for split, names in wanted.items():
            folder = self.root / split
            if not folder.is_dir():
                continue
            on_disk = {p.stem: p for p in folder.glob("*.dcm")}
            for name in names & on_disk.keys():
                found[(split, name)] = ImageRef(
                    name, split, f"{split}/{name}.dcm", on_disk[name].stat().st_size
                )
        return found

    def probe(self, ref: ImageRef) -> ProbeResult:
        if ref.file_size == 0:
            raise ImageReadError("the file is empty (0 bytes); re-export or re-download it")
        ds = _read_dataset(self.root / ref.relative_path, defer_size=1024)
        _require_pixels(ds)
        width, height = int(ds.Columns), int(ds.Rows)
        check_pixel_limit(width, height, self.max_pixels)
        return ProbeResult(width, height, header_metadata(ds))

    def decode(self, data: bytes, min_side: int | None = None) -> DecodedImage:
        ds = _read_dataset(io.BytesIO(data))
        _require_pixels(ds)
        check_pixel_limit(int(ds.Columns), int(ds.Rows), self.max_pixels)
        if _is_plain_jpeg_ybr(ds):
            # Same decoder as the JPEG folders (and draft mode for big originals): identical pixels.
            frame = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1)))
            return decode_image_bytes(frame, min_side=min_side, max_pixels=self.max_pixels)
        try:
            pixels = ds.pixel_array
        except (NotImplementedError, RuntimeError, ValueError, AttributeError) as err:
            syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
            raise ImageReadError(
                f"cannot decode DICOM pixel data with transfer syntax {syntax} "
                f"({getattr(syntax, 'name', '')}): {err}. Install the pylibjpeg/GDCM plugin that "
                "supports it, or convert the file to JPEG baseline or uncompressed"
            ) from err
        if int(ds.get("NumberOfFrames", 1)) > 1:
            pixels = pixels[0]
        image = rgb_array(pixels, bits=int(ds.get("BitsStored", 8)))
        return DecodedImage(image, int(ds.Columns), int(ds.Rows))


def header_metadata(ds: pydicom.Dataset) -> dict[str, Any]:
    """Patient id, sex, age and body site from the DICOM header, in the CSV's vocabulary."""
    age_match = _AGE.match(str(ds.get("PatientAge", "")))
    site = str(ds.get("BodyPartExamined", "")).strip().lower().replace("_", "/")
    return {
        "patient_id": str(ds.get("PatientID", "")) or None,
        "sex": _SEX_CODES.get(str(ds.get("PatientSex", "")).upper()),
        "age_approx": float(age_match.group(1)) if age_match else None,
        "anatom_site_general_challenge": site or None,
    }


def _read_dataset(source: Path | io.BytesIO, defer_size: int | None = None) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(source, defer_size=defer_size)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        raise ImageReadError(f"not a readable DICOM file ({err}); re-export it") from err


def _require_pixels(ds: pydicom.Dataset) -> None:
    if "PixelData" not in ds:
        raise ImageReadError("the DICOM file has no pixel data (PixelData element missing)")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError("the DICOM header lacks Rows/Columns; the file is incomplete")


def _is_plain_jpeg_ybr(ds: pydicom.Dataset) -> bool:
    return ds.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit and str(
        ds.get("PhotometricInterpretation", "")
    ).startswith("YBR_FULL")
