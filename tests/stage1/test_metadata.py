"""CSV reading: normalisation, real counts, and every bad-CSV case named in the issues."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stage1_embed.errors import DataError
from stage1_embed.metadata import load_metadata, read_split_csv
from tests.conftest import ISIC, require, tiny_table

HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"


def write(tmp_path: Path, text: str, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_normalises_types_and_keeps_missing_values_missing(tmp_path: Path) -> None:
    path = write(
        tmp_path, HEADER + "A_1,P1,Male,45.0,Torso,nevus,benign,0\nA_2,P1,,,,unknown,benign,1\n"
    )
    table = read_split_csv(path, "train")
    assert table["sex"].tolist()[0] == "male" and table["sex"].isna().tolist() == [False, True]
    assert table["age_approx"].isna().tolist() == [False, True]
    assert table["anatom_site_general_challenge"].tolist()[0] == "torso"
    assert table["anatom_site_general_challenge"].isna().tolist() == [False, True]
    assert table["target"].tolist() == [0, 1]
    assert set(table["split"]) == {"train"}


@pytest.mark.shared
def test_real_train_csv_counts() -> None:
    table = load_metadata(require(ISIC / "csv" / "train.csv"), ISIC / "csv" / "test.csv")
    train = table[table["split"] == "train"]
    assert len(train) == 33126 and int(train["target"].sum()) == 584
    assert train["patient_id"].nunique() == 2056
    assert train["sex"].isna().sum() == 65
    assert train["age_approx"].isna().sum() == 68
    assert train["anatom_site_general_challenge"].isna().sum() == 527
    assert (table["split"] == "test").sum() == 10982


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_split_csv(tmp_path / "nope.csv", "train")


@pytest.mark.parametrize("text", ["", HEADER], ids=["no-bytes", "header-only"])
def test_empty_csv(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataError, match=r"empty|no rows"):
        read_split_csv(write(tmp_path, text), "train")


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "image_name,sex,age_approx,target\nA,male,40,0\n")
    with pytest.raises(DataError, match="patient_id"):
        read_split_csv(path, "train")


def test_absent_optional_columns_are_missing_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "image_name,patient_id\nA,P1\nB,P1\n")
    table = read_split_csv(path, "test")
    assert table["sex"].isna().all() and table["age_approx"].isna().all()
    assert table["anatom_site_general_challenge"].isna().all()
    assert "no sex / age_approx / anatom_site_general_challenge column" in caplog.text


def test_duplicate_image_name_lists_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "A,P,male,40,torso,x,benign,0\nB,P,male,40,torso,x,benign,0\nA,P,male,40,torso,x,benign,0\n",
    )
    with pytest.raises(DataError, match=r"duplicate image_name \['A'\].*line\(s\) 2, 4"):
        read_split_csv(path, "train")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "a\\b", ".hidden", "a..b", "/abs"])
def test_image_name_must_be_a_plain_stem(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, HEADER + f"{name},P,male,40,torso,x,benign,0\n")
    with pytest.raises(DataError, match="not a plain file stem"):
        read_split_csv(path, "train")


@pytest.mark.parametrize(
    ("age", "message"), [("forty", "not a number"), ("-5", "outside"), ("300", "outside")]
)
def test_bad_age(tmp_path: Path, age: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_split_csv(write(tmp_path, HEADER + f"A,P,male,{age},torso,x,benign,0\n"), "train")


def test_bad_target(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not 0 or 1"):
        read_split_csv(write(tmp_path, HEADER + "A,P,male,40,torso,x,benign,2\n"), "train")


def test_unknown_site_and_sex_kept_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, HEADER + "A,P,other,40,left ear,x,benign,0\n")
    with caplog.at_level(logging.WARNING):
        table = read_split_csv(path, "train")
    assert table.loc[0, "anatom_site_general_challenge"] == "left ear"
    assert table.loc[0, "sex"] == "other"
    assert "unknown anatomic site" in caplog.text and "unknown sex" in caplog.text


def test_test_csv_with_target_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "A,P,male,40,torso,x,benign,0\n", "test.csv")
    with pytest.raises(DataError, match="test labels"):
        read_split_csv(path, "test")


def test_train_test_overlap_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = tiny_table(2, 2)
    table.to_csv(tmp_path / "train.csv", index=False)
    table.drop(columns=["target", "diagnosis"]).head(1).to_csv(tmp_path / "test.csv", index=False)
    with caplog.at_level(logging.WARNING):
        load_metadata(tmp_path / "train.csv", tmp_path / "test.csv")
    assert "share 1 image name" in caplog.text and "share 1 patient" in caplog.text


def test_isic2019_site_alias_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "image_name,patient_id,sex,age_approx,anatom_site_general,target\nA,P,male,40,anterior torso,0\n",
    )
    assert read_split_csv(path, "train").loc[0, "anatom_site_general_challenge"] == "anterior torso"


@pytest.mark.parametrize("text", ["", "image_name,patient_id\n"])
def test_an_empty_test_csv_says_it_may_be_deleted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "test.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=r"or delete test\.csv"):
        read_split_csv(path, "test")
