"""Extra training data: the ISIC 2019 reader on the real CSVs, duplicates, stage 1 on extra sets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from stage1_embed.config import Stage1Config
from stage1_embed.errors import DataError
from stage1_embed.extra import (
    ISIC2019_GROUND_TRUTH,
    ISIC2019_IMAGES,
    ISIC2019_METADATA,
    SITE_MAP,
    detect_extra,
    read_extra_table,
    resolve_duplicates,
)
from stage1_embed.metadata import KNOWN_SITES
from stage1_embed.pipeline import run_stage1
from stage1_embed.schema import extra_features_dir, read_embeddings, read_manifest
from tests.conftest import HAM, ISIC, lite0_dir, require, tiny_table

EXTRA_CSVS = ISIC / "csv" / "extra"
SITES_2020 = {"torso", "head/neck", "upper extremity", "lower extremity", "palms/soles",
              "oral/genital"}  # fmt: skip


def isic2019_folder(root: Path, names: list[str] | None = None) -> Path:
    """An ISIC 2019 layout from the real CSVs; with ``names``, only those rows, and the HAM
    images of those names (symlinks) in ISIC_2019_Training_Input/."""
    require(EXTRA_CSVS)
    truth = pd.read_csv(EXTRA_CSVS / ISIC2019_GROUND_TRUTH, dtype=str)
    meta = pd.read_csv(EXTRA_CSVS / ISIC2019_METADATA, dtype=str)
    if names is not None:
        truth, meta = truth[truth["image"].isin(names)], meta[meta["image"].isin(names)]
        images = root / ISIC2019_IMAGES
        images.mkdir(parents=True)
        for name in names:
            (images / f"{name}.jpg").symlink_to(HAM / "jpeg" / "train" / f"{name}.jpg")
    root.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / ISIC2019_GROUND_TRUTH, index=False)
    meta.to_csv(root / ISIC2019_METADATA, index=False)
    return root


@pytest.mark.shared
def test_isic2019_reader_on_the_real_csvs(tmp_path: Path) -> None:
    table = read_extra_table(detect_extra(isic2019_folder(tmp_path / "ISIC2019")))
    truth = pd.read_csv(EXTRA_CSVS / ISIC2019_GROUND_TRUTH)
    meta = pd.read_csv(EXTRA_CSVS / ISIC2019_METADATA)
    assert len(table) == len(truth) == 25_331
    assert int(table["target"].sum()) == int(truth["MEL"].sum()) == 4_522
    assert table["split"].eq("train").all()
    # target = melanoma, one-hot diagnosis kept
    by_name = table.set_index("image_name")
    mel = truth.set_index("image")["MEL"]
    assert (by_name["target"].astype(int) == mel.reindex(by_name.index)).all()
    assert set(by_name.loc[mel[mel == 1].index, "diagnosis"]) == {"MEL"}
    # sites mapped onto the 2020 categories: the three torso parts become torso
    assert set(table["anatom_site_general_challenge"].dropna()) <= SITES_2020
    torso_2019 = meta["anatom_site_general"].isin(["anterior torso", "posterior torso",
                                                   "lateral torso"]).sum()  # fmt: skip
    assert (table["anatom_site_general_challenge"] == "torso").sum() == torso_2019
    # grouping: lesion_id when present, else the image name, prefixed by the source
    lesion = meta.set_index("image")["lesion_id"].reindex(by_name.index)
    expected = ("ISIC2019:" + lesion.fillna(pd.Series(by_name.index, index=by_name.index))).astype(
        str
    )
    assert (by_name["patient_id"].astype(str) == expected).all()
    assert (
        table["patient_id"].nunique()
        == meta["lesion_id"].nunique() + meta["lesion_id"].isna().sum()
    )


@pytest.mark.shared
def test_isic2019_unknown_rows_are_left_out_and_bad_labels_refused(tmp_path: Path) -> None:
    folder = isic2019_folder(tmp_path / "ISIC2019")
    truth = pd.read_csv(folder / ISIC2019_GROUND_TRUTH)
    truth.loc[:2, ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]] = 0
    truth.loc[:1, "UNK"] = 1  # two UNK rows, one row with no diagnosis at all
    truth.to_csv(folder / ISIC2019_GROUND_TRUTH, index=False)
    table = read_extra_table(detect_extra(folder))
    assert len(table) == 25_331 - 3
    assert not table["image_name"].isin(truth["image"][:3]).any()
    truth.loc[5, "MEL"] = 2
    truth.to_csv(folder / ISIC2019_GROUND_TRUTH, index=False)
    with pytest.raises(DataError, match=r"must be 0 or 1.*line\(s\) 7"):
        read_extra_table(detect_extra(folder))


def test_site_map_covers_every_known_site() -> None:
    assert set(SITE_MAP) >= KNOWN_SITES and set(SITE_MAP.values()) == SITES_2020


def test_not_a_dataset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a Kaggle-layout folder"):
        detect_extra(tmp_path)


def test_duplicate_names_across_sources_are_an_error_unless_dropped() -> None:
    primary = tiny_table(2, 3)
    first = tiny_table(2, 2).assign(image_name=lambda t: "X_" + t["image_name"])
    second = pd.concat([first.head(1), primary.head(2), tiny_table(1, 2).assign(image_name="Z_" + tiny_table(1, 2)["image_name"])])  # fmt: skip
    extras = {"first": first, "second": second.reset_index(drop=True)}
    with pytest.raises(DataError, match=r"3 of second's images are also in") as err:
        resolve_duplicates(primary, extras, drop=False)
    assert "X_IMG_0000" in str(err.value) and "--drop-extra-duplicates" in str(err.value)
    kept = resolve_duplicates(primary, extras, drop=True)
    assert len(kept["first"]) == len(first)
    assert kept["second"]["image_name"].tolist() == ["Z_IMG_0000", "Z_IMG_0001"]


@pytest.fixture
def stage1_config(tiny_dataset: Path, tmp_path: Path) -> Stage1Config:
    spec = f"local-dir:{lite0_dir()}"
    return Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "out", backbones=(spec,),
                        batch_size=8, chunk_size=16, num_workers=0, progress=False)  # fmt: skip


@pytest.mark.shared
@pytest.mark.slow
def test_stage1_embeds_a_real_isic2019_folder_as_extra_data(
    stage1_config: Stage1Config, tmp_path: Path
) -> None:
    ham = pd.read_csv(require(HAM) / "train.csv")
    names = ham.groupby("target").head(6)["image_name"].tolist()
    folder = isic2019_folder(tmp_path / "ISIC_2019", names)
    config = replace(stage1_config, extra_data=(folder,))
    summary = run_stage1(config)
    assert summary.complete and len(summary.extras) == 1
    out = extra_features_dir(config.out_dir, folder)
    manifest, _ = read_manifest(out)
    assert sorted(manifest["image_name"]) == sorted(names)
    assert (manifest["read_status"] == "ok").all() and manifest["split"].eq("train").all()
    assert manifest["patient_id"].str.startswith("ISIC_2019:HAM_").all()
    emb = read_embeddings(out / "embeddings" / "tf_efficientnet_lite0.parquet")
    assert len(emb.keys) == len(names)
    # the primary data's outputs are untouched by the extra set
    primary, _ = read_manifest(config.out_dir)
    assert not primary["image_name"].isin(names).any()
    # a rerun reuses the cached extra embeddings
    again = run_stage1(config)
    assert [r.status for r in again.extras[0].results] == ["cached"]


def test_extra_images_missing_follow_the_primary_rules(
    stage1_config: Stage1Config, tiny_dataset: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra-set"
    (extra / "jpeg" / "train").mkdir(parents=True)
    table = tiny_table(2, 2).assign(image_name=lambda t: "EXTRA_" + t["image_name"])
    table.to_csv(extra / "train.csv", index=False)
    for name in table["image_name"][:3]:  # the fourth image is missing
        (extra / "jpeg" / "train" / f"{name}.jpg").symlink_to(
            tiny_dataset / "jpeg" / "train" / "IMG_0000.jpg"
        )
    config = replace(stage1_config, extra_data=(extra,), backbones=())
    run_stage1(config)  # metadata only: no image is read, none is missing
    config = replace(config, backbones=stage1_config.backbones)
    with pytest.raises(DataError, match="EXTRA_IMG_0003"):
        run_stage1(config)
    run_stage1(replace(config, skip_missing=True))
    manifest, provenance = read_manifest(extra_features_dir(config.out_dir, extra))
    assert (manifest["read_status"] == "ok").sum() == 3 and provenance["n_dropped_missing"] == 1
