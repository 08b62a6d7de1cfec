"""The data check: identical images across patients and splits, conflicting metadata, the
acquisition shortcut, and the check command's JSON and page (issue 28)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.__main__ import main
from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config
from stage1_embed.data_check import metadata_conflicts, near_duplicates, shortcut
from stage1_embed.errors import DataError
from tests.stage2.helpers import synthetic_manifest


def test_identical_bytes_are_paired_and_flagged() -> None:
    manifest = synthetic_manifest(n_patients=4, per_patient=2, n_test_patients=1)
    manifest.loc[[0, 1, 2], "content_sha256"] = "same"  # patient 0 twice, patient 1 once
    manifest.loc[[3, 8], "content_sha256"] = "leak"  # a training image again in test
    manifest.loc[3, "target"], manifest.loc[0, "target"], manifest.loc[2, "target"] = 1, 0, 1
    pairs = {(p["image_a"], p["image_b"]): p for p in near_duplicates(manifest)}
    assert len(pairs) == 4
    within = pairs[("IMG_00000", "IMG_00001")]
    assert within["same_patient"] and not within["crosses_splits"] and within["similarity"] == 1.0
    across = pairs[("IMG_00000", "IMG_00002")]
    assert not across["same_patient"] and across["labels_differ"]
    assert pairs[("IMG_00003", "IMG_00008")]["crosses_splits"]


def test_conflicting_metadata_is_listed() -> None:
    manifest = synthetic_manifest(n_patients=3, per_patient=3, n_test_patients=0)
    manifest.loc[0, "sex"] = "female" if manifest.loc[1, "sex"] == "male" else "male"
    manifest.loc[3, "age_approx"], manifest.loc[4, "age_approx"] = 20.0, 70.0
    problems = {(c["patient_id"], c["problem"].split(" ")[0]) for c in metadata_conflicts(manifest)}
    assert problems == {("P_0000", "more"), ("P_0001", "ages")}


def test_a_shortcut_through_the_file_size_is_found() -> None:
    manifest = synthetic_manifest(n_patients=60, per_patient=4, n_test_patients=0)
    target = manifest["target"].astype(int)
    manifest["file_size"] = np.where(target == 1, 90_000, 30_000) + np.arange(len(manifest))
    found = shortcut(manifest, n_boot=50)
    assert found["warning"] and found["ci95"][0] > 0.6
    manifest["file_size"] = 50_000
    manifest["width"] = 512
    assert not shortcut(manifest, n_boot=50)["warning"]


def test_the_check_command_writes_json_and_page(tiny_dataset: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    train = pd.read_csv(tiny_dataset / "train.csv")
    folder = tiny_dataset / "jpeg" / "train"
    shutil.copy(folder / f"{train['image_name'][0]}.jpg", folder / f"{train['image_name'][5]}.jpg")
    assert main(["check", "--data", str(tiny_dataset), "--out", str(tmp_path / "check")]) == 0
    result = json.loads((tmp_path / "check" / "data_check.json").read_text())
    assert {"channel_order", "near_duplicates", "metadata", "shortcut"} <= set(result)
    pair = result["near_duplicates"][0]
    assert (pair["image_a"], pair["image_b"]) == (train["image_name"][0], train["image_name"][5])
    assert not pair["same_patient"]
    assert set(result["channel_order"]) == {"train", "test"}
    assert not result["same_lesion"]["searched"]  # nothing embedded into OUT yet: it says so
    assert "run stage 1 into it first" in result["same_lesion"]["reason"]
    page = (tmp_path / "check" / "data_check.html").read_text()
    assert "two patients" in page and page.count("data:image/jpeg;base64,") >= 2
    assert "run stage 1 into it first" in page
    assert (
        "1 pair(s) of one lesion (1 identical files), 1 across patients" in capsys.readouterr().out
    )


def test_a_source_without_a_readable_image_is_a_clear_error(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    for path in (tiny_dataset / "jpeg").rglob("*.jpg"):
        path.write_bytes(b"")
    for other_format in ("train", "test", "tfrecords"):  # DICOM and TFRecord copies
        shutil.rmtree(tiny_dataset / other_format, ignore_errors=True)
    with pytest.raises(DataError, match="No readable image"):
        run_check(Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "c", image_format="jpeg"))


def test_every_stage1_run_writes_the_cheap_checks(tiny_dataset: Path, tmp_path: Path) -> None:
    from stage1_embed.pipeline import run_stage1

    run_stage1(Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "meta", backbones=()))
    result = json.loads((tmp_path / "meta" / "data_check.json").read_text())
    assert result["near_duplicates"] == [] and result["metadata"] == []


def test_shift_reads_chance_on_a_random_split_and_finds_a_real_one() -> None:
    from stage1_embed.data_check import shift

    manifest = synthetic_manifest(n_patients=80, per_patient=4, n_test_patients=0)
    rng = np.random.default_rng(3)
    patient_half = {p: rng.random() < 0.5 for p in manifest["patient_id"].unique()}
    is_b = manifest["patient_id"].map(patient_half).to_numpy(int)
    vectors = rng.normal(size=(len(manifest), 32)).astype(np.float32)
    random_split = shift(manifest, is_b, vectors, n_boot=100)
    # out of fold on pure noise, the AUC of one draw can sit below 0.5 with its interval ending just
    # under it (here 'images': [0.396, 0.49993]); what must hold is that nothing reads as a shift
    for side in ("metadata", "images", "metadata + images"):
        low, _ = random_split[side]["ci95"]
        assert low < 0.5 and not random_split[side]["warning"], (side, random_split[side])
    assert "no shift shown" in random_split["reason"]
    vectors[is_b == 1, :4] += 1.5  # set B's images look different
    real = shift(manifest, is_b, vectors, n_boot=100)
    assert real["images"]["warning"] and not real["metadata"]["warning"]
    assert "different distributions" in real["reason"]
