"""Image sources: three formats give the same pixels; detection; cross-checks; real TFRecords."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from stage1_embed.errors import DataError, ImageReadError
from stage1_embed.kaggle_layout import write_dicom
from stage1_embed.metadata import load_metadata
from stage1_embed.scan import scan_dataset
from stage1_embed.sources import SOURCES, create_source
from stage1_embed.sources.tfrecord import iter_records
from tests.conftest import ISIC, require, tiny_pixels


def decode_all(root: Path, fmt: str) -> dict[str, np.ndarray]:
    table = load_metadata(root / "train.csv", root / "test.csv")
    source = create_source(root, image_format=fmt)
    scan = scan_dataset(table, source)
    return {
        name: np.asarray(source.decode(source.read_bytes(ref)).image)
        for (_, name), ref in scan.refs.items()
    }


def test_same_pixels_from_jpeg_dicom_and_tfrecord(tiny_dataset: Path) -> None:
    arrays = {fmt: decode_all(tiny_dataset, fmt) for fmt in SOURCES}
    assert len(arrays["jpeg"]) == 15
    for fmt in ("dicom", "tfrecord"):
        assert arrays[fmt].keys() == arrays["jpeg"].keys()
        for name, pixels in arrays["jpeg"].items():
            np.testing.assert_array_equal(arrays[fmt][name], pixels, err_msg=f"{fmt} {name}")


def test_dicom_ybr_pixels_match_pydicom_decoder(tiny_dataset: Path) -> None:
    """Our fast path (PIL on the JPEG frame) agrees with pydicom's own YBR->RGB decoding."""
    path = next((tiny_dataset / "train").glob("*.dcm"))
    ours = np.asarray(
        create_source(tiny_dataset, image_format="dicom").decode(path.read_bytes()).image, dtype=int
    )
    theirs = pydicom.dcmread(path).pixel_array.astype(int)
    assert np.abs(ours - theirs).mean() < 2.0


def test_detects_format_and_prefers_jpeg(tiny_dataset: Path) -> None:
    assert create_source(tiny_dataset).format_name == "jpeg"
    shutil.rmtree(tiny_dataset / "jpeg")
    assert create_source(tiny_dataset).format_name == "tfrecord"
    shutil.rmtree(tiny_dataset / "tfrecords")
    assert create_source(tiny_dataset).format_name == "dicom"


def test_images_folder_given_separately(tiny_dataset: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "resized"
    shutil.move(tiny_dataset / "jpeg", elsewhere)
    source = create_source(tiny_dataset, images_dir=elsewhere)
    assert source.format_name == "jpeg" and source.root == elsewhere


def test_no_images_found_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"No images found.*--backbones none"):
        create_source(tmp_path)


def test_missing_images_are_listed_or_skipped_on_request(tiny_dataset: Path) -> None:
    (tiny_dataset / "jpeg" / "train" / "IMG_0003.jpg").unlink()
    table = load_metadata(tiny_dataset / "train.csv")
    source = create_source(tiny_dataset, image_format="jpeg")
    with pytest.raises(
        DataError,
        match=r"1 image\(s\) listed in the CSV are missing.*train/IMG_0003.*--skip-missing",
    ):
        scan_dataset(table, source)
    scan = scan_dataset(table, source, skip_missing=True)
    assert scan.n_dropped_missing == 1
    assert scan.manifest.set_index("image_name").loc["IMG_0003", "read_status"] == "missing"


def test_header_failures_are_recorded_per_image(tiny_dataset: Path) -> None:
    folder = tiny_dataset / "jpeg" / "train"
    (folder / "IMG_0001.jpg").write_bytes(b"")
    (folder / "IMG_0002.jpg").write_text("not an image")
    scan = scan_dataset(load_metadata(tiny_dataset / "train.csv"), create_source(tiny_dataset))
    status = scan.manifest.set_index("image_name")
    assert (
        status.loc["IMG_0001", "read_status"] == "failed"
        and "empty" in status.loc["IMG_0001", "read_error"]
    )
    assert (
        status.loc["IMG_0002", "read_status"] == "failed"
        and "not an image" in status.loc["IMG_0002", "read_error"]
    )
    assert (status["read_status"] == "ok").sum() == 10


def test_dicom_header_disagreement_is_reported(
    tiny_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = load_metadata(tiny_dataset / "train.csv")
    row = table.iloc[0].to_dict() | {"sex": "female" if table.iloc[0]["sex"] == "male" else "male"}
    path = tiny_dataset / "train" / f"{row['image_name']}.dcm"
    jpeg = (tiny_dataset / "jpeg" / "train" / f"{row['image_name']}.jpg").read_bytes()
    write_dicom(path, jpeg, row)
    with caplog.at_level(logging.WARNING):
        scan = scan_dataset(table, create_source(tiny_dataset, image_format="dicom"))
    assert [(d.column, d.count) for d in scan.disagreements] == [("sex", 1)]
    assert row["image_name"] in scan.disagreements[0].examples[0] and "cross-check" in caplog.text


def test_tfrecord_target_disagreement_is_reported(tiny_dataset: Path) -> None:
    csv = pd.read_csv(tiny_dataset / "train.csv")
    csv.loc[0, "target"] = 1 - csv.loc[0, "target"]
    csv.to_csv(tiny_dataset / "train.csv", index=False)
    scan = scan_dataset(
        load_metadata(tiny_dataset / "train.csv"),
        create_source(tiny_dataset, image_format="tfrecord"),
    )
    assert ("target", 1) in [(d.column, d.count) for d in scan.disagreements]


def test_dicom_without_pixel_data(tiny_dataset: Path) -> None:
    path = next((tiny_dataset / "train").glob("*.dcm"))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="no pixel data"):
        create_source(tiny_dataset, image_format="dicom").decode(buffer.getvalue())


def test_dicom_unsupported_transfer_syntax(tiny_dataset: Path) -> None:
    path = next((tiny_dataset / "train").glob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100"):
        create_source(tiny_dataset, image_format="dicom").decode(buffer.getvalue())


def test_dicom_grayscale_16_bit_is_handled(tiny_dataset: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(next((tiny_dataset / "train").glob("*.dcm")))
    gray = np.asarray(Image.fromarray(tiny_pixels(1)[0]).convert("L"), dtype=np.uint16)
    pixels = gray * 16  # 12 bits stored
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    image = create_source(tiny_dataset, image_format="dicom").decode(buffer.getvalue()).image
    assert image.mode == "RGB"
    # scaled by the stored bit depth (12), not stretched per image
    assert np.abs(np.asarray(image)[..., 0] - gray.astype(float) * 16 * 255 / 4095).max() <= 1


def corrupt_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("offset", "message"), [(3, "length fails its CRC"), (40, "data fails its CRC")]
)
def test_tfrecord_crc_errors_name_the_shard(tiny_dataset: Path, offset: int, message: str) -> None:
    shard = sorted((tiny_dataset / "tfrecords").glob("train*.tfrec"))[0]
    corrupt_byte(shard, offset)
    with pytest.raises(
        DataError, match=f"{shard.name} is corrupt at record 0: the record {message}"
    ):
        list(iter_records(shard))


def test_tfrecord_truncated(tiny_dataset: Path) -> None:
    shard = sorted((tiny_dataset / "tfrecords").glob("train*.tfrec"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        list(iter_records(shard))


@pytest.mark.parametrize(
    ("features", "missing"),
    [({"image": (b"\xff\xd8", "byte")}, "image_name"), ({"image_name": (b"A", "byte")}, "image")],
)
def test_tfrecord_without_a_required_feature(tmp_path: Path, features: dict, missing: str) -> None:
    from tfrecord.writer import TFRecordWriter

    (tmp_path / "tfrecords").mkdir()
    writer = TFRecordWriter(str(tmp_path / "tfrecords" / "train00-1.tfrec"))
    writer.write({**features, "target": (0, "int")})
    writer.close()
    pd.DataFrame([{"image_name": "A", "patient_id": "P", "sex": "male", "age_approx": 40,
                   "anatom_site_general_challenge": "torso", "target": 0}]).to_csv(tmp_path / "train.csv", index=False)  # fmt: skip
    with pytest.raises(DataError, match=f"no bytes feature '{missing}'"):
        scan_dataset(load_metadata(tmp_path / "train.csv"), create_source(tmp_path))


@pytest.mark.shared
def test_real_shared_tfrecord_shards(tmp_path: Path) -> None:
    shards = sorted(require(ISIC / "tfrecord").glob("*.tfrec"))
    (tmp_path / "tfrecords").mkdir()
    for shard in shards:
        (tmp_path / "tfrecords" / shard.name).symlink_to(shard)
    csv = pd.read_csv(ISIC / "csv" / "train.csv")
    names = {p.stem for p in (ISIC / "jpeg" / "train_512").glob("*.jpg")}
    csv[csv["image_name"].isin(names)].to_csv(tmp_path / "train.csv", index=False)
    source = create_source(tmp_path)
    scan = scan_dataset(load_metadata(tmp_path / "train.csv"), source, skip_missing=True)
    assert len(scan.refs) == 47
    assert scan.disagreements == []  # targets agree; per-shard codes are consistent
    for (_, name), ref in list(scan.refs.items())[:5]:
        assert source.read_bytes(ref) == (ISIC / "jpeg" / "train_512" / f"{name}.jpg").read_bytes()
    assert (scan.manifest.query("read_status == 'ok'")[["width", "height"]] == 512).all().all()


def test_real_jpegs_scan(isic_layout: Path) -> None:
    table = load_metadata(isic_layout / "train.csv")
    scan = scan_dataset(table, create_source(isic_layout))
    assert len(scan.refs) == 1847 and int(table["target"].sum()) == 27
    assert scan.manifest["file_size"].gt(0).all()


def test_tfrecord_names_are_never_paths(tiny_dataset: Path) -> None:
    """A record named like a path is matched against CSV names only, never joined to a folder."""
    from tfrecord.writer import TFRecordWriter

    jpeg = (tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg").read_bytes()
    writer = TFRecordWriter(str(tiny_dataset / "tfrecords" / "train99-1.tfrec"))
    writer.write({"image": (jpeg, "byte"), "image_name": (b"../../etc/passwd", "byte")})
    writer.close()
    scan = scan_dataset(
        load_metadata(tiny_dataset / "train.csv"),
        create_source(tiny_dataset, image_format="tfrecord"),
    )
    assert all(".." not in name for _, name in scan.refs) and len(scan.refs) == 12


def test_flat_folder_and_any_letter_case_of_extensions(tiny_dataset: Path, tmp_path: Path) -> None:
    """Archives name files ISIC_*.JPG and keep them in one folder (ISIC_2019_Training_Input/)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    names = ["IMG_0000", "IMG_0001", "IMG_0002"]
    for name, ext in zip(names, (".JPG", ".jpeg", ".Png"), strict=True):
        shutil.copy(tiny_dataset / "jpeg" / "train" / f"{name}.jpg", flat / f"{name}{ext}")
    shutil.copy(tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg", flat / "IMG_0000.png")
    source = create_source(tmp_path, images_dir=flat)
    refs = source.index({"train": set(names)})
    assert sorted(r.relative_path for r in refs.values()) == [
        "IMG_0000.JPG",  # .jpg beats .png for the same stem
        "IMG_0001.jpeg",
        "IMG_0002.Png",
    ]
    assert source.probe(refs[("train", "IMG_0002")]).width == 48
