"""Write a dataset in the Kaggle layout, in any of the three formats, from the same JPEG bytes.

Used by the demo generator and by tests: since JPEG files, DICOM pixel data and TFRecord ``image``
features hold identical JPEG bytes, all three formats decode to identical pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid
from tfrecord.writer import TFRecordWriter

FORMATS = ("jpeg", "dicom", "tfrecord")
SEX_CODES = {"female": 0, "male": 1}
SITE_CODES = {
    "head/neck": 0,
    "lower extremity": 1,
    "oral/genital": 2,
    "palms/soles": 3,
    "torso": 4,
    "upper extremity": 5,
}


def encode_jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    """RGB uint8 (H, W, 3) -> baseline JPEG bytes (4:2:2 chroma, as YBR_FULL_422 declares)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=quality, subsampling=1)
    return buffer.getvalue()


def write_jpeg(path: Path, jpeg: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg)


def write_dicom(path: Path, jpeg: bytes, row: Mapping) -> None:
    """A DICOM file whose pixel data is the given JPEG (YBR_FULL_422), with patient headers."""
    with Image.open(io.BytesIO(jpeg)) as img:
        width, height = img.size
    uid = generate_uid(entropy_srcs=[str(row["image_name"])])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality = "XC"
    ds.PatientID = str(row["patient_id"])
    ds.PatientName = str(row["patient_id"])
    if pd.notna(row.get("sex")):
        ds.PatientSex = "M" if row["sex"] == "male" else "F"
    if pd.notna(row.get("age_approx")):
        ds.PatientAge = f"{int(row['age_approx']):03d}Y"
    if pd.notna(row.get("anatom_site_general_challenge")):
        # CS values allow no "/": HEAD/NECK is stored as HEAD_NECK (and read back as head/neck).
        ds.BodyPartExamined = (
            str(row["anatom_site_general_challenge"]).upper().replace("/", "_")[:16]
        )
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_tfrecord_shards(
    folder: Path,
    split: str,
    rows: Sequence[Mapping],
    jpegs: Mapping[str, bytes],
    per_shard: int = 128,
) -> list[Path]:
    """Kaggle-style shards ``<split>NN-<count>.tfrec`` with integer-coded metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    patient_codes = {pid: i for i, pid in enumerate(sorted({str(r["patient_id"]) for r in rows}))}
    paths = []
    for shard, start in enumerate(range(0, len(rows), per_shard)):
        chunk = rows[start : start + per_shard]
        path = folder / f"{split}{shard:02d}-{len(chunk)}.tfrec"
        writer = TFRecordWriter(str(path))
        for row in chunk:
            code = patient_codes[str(row["patient_id"])]
            writer.write(_tf_features(row, jpegs[str(row["image_name"])], split, code))
        writer.close()
        paths.append(path)
    return paths


def _tf_features(row: Mapping, jpeg: bytes, split: str, patient_code: int) -> dict:
    """Kaggle-style features: integer codes for the categorical fields (-1 when missing)."""
    features = {
        "image": (jpeg, "byte"),
        "image_name": (str(row["image_name"]).encode(), "byte"),
        "patient_id": (patient_code, "int"),
        "sex": (SEX_CODES.get(str(row.get("sex")), -1), "int"),
        "age_approx": (int(row["age_approx"]) if pd.notna(row.get("age_approx")) else -1, "int"),
        "anatom_site_general_challenge": (
            SITE_CODES.get(str(row.get("anatom_site_general_challenge")), -1),
            "int",
        ),
    }
    if split == "train":
        features["target"] = (int(row["target"]), "int")
    return features


def write_kaggle_dataset(
    root: Path,
    tables: Mapping[str, pd.DataFrame],
    jpegs: Mapping[str, bytes],
    formats: Sequence[str] = FORMATS,
) -> None:
    """Write ``<split>.csv`` plus the images of each split in each of ``formats``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, table in tables.items():
        table.to_csv(root / f"{split}.csv", index=False)
        rows = table.to_dict("records")
        for row in rows:
            name = str(row["image_name"])
            if "jpeg" in formats:
                write_jpeg(root / "jpeg" / split / f"{name}.jpg", jpegs[name])
            if "dicom" in formats:
                write_dicom(root / split / f"{name}.dcm", jpegs[name], row)
        if "tfrecord" in formats:
            write_tfrecord_shards(root / "tfrecords", split, rows, jpegs)
