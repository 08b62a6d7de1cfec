"""Two shots of one lesion (moved, turned, zoomed) are paired; different lesions are not; the
pairs merge patients into one fold group unless an image changed since (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stage1_embed.check import run_check
from stage1_embed.config import Stage1Config
from stage1_embed.folds import fold_groups, read_same_lesion_links, write_same_lesion_links
from stage1_embed.pipeline import run_stage1
from stage1_embed.same_lesion import MIN_INLIERS, candidate_pairs, inliers, keypoints
from tests.conftest import SHARED, lite0_dir, require
from tests.stage2.helpers import synthetic_manifest

LESIONS = SHARED / "data" / "ham10000_lesions"


def lesion(seed: int, size: int = 320) -> Image.Image:
    """A textured blob: enough corners for ORB, different for every seed."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:size, 0:size].transpose(1, 2, 0) - size / 2
    blob = np.exp(-(grid**2).sum(-1) / (2 * (size / 5) ** 2))
    dots = np.zeros((size, size))
    for y, x in rng.integers(size // 6, 5 * size // 6, (90, 2)):
        dots[y - 3 : y + 3, x - 3 : x + 3] = rng.uniform(0.4, 1)
    pixels = 230 - 120 * blob - 90 * dots
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


def test_a_second_shot_of_one_lesion_matches_and_another_lesion_does_not() -> None:
    first = lesion(0)
    second = first.rotate(17, resample=Image.Resampling.BILINEAR, fillcolor=(230, 230, 230))
    second = second.crop((20, 10, 300, 290)).resize((300, 300))  # moved and zoomed
    assert inliers(keypoints(first), keypoints(second)) >= MIN_INLIERS
    assert inliers(keypoints(first), keypoints(lesion(1))) < MIN_INLIERS
    assert inliers(keypoints(first), keypoints(Image.new("RGB", (64, 64), "grey"))) == 0


def test_candidates_stay_within_the_metadata_block() -> None:
    frame = pd.DataFrame({"sex": ["male", "male", "female", "male"], "age_approx": [50.0] * 4,
                          "anatom_site_general_challenge": ["torso"] * 4})  # fmt: skip
    vectors = np.array([[1, 0], [1, 0.1], [1, 0.05], [np.nan, np.nan]], np.float32)
    assert candidate_pairs(frame, vectors).tolist() == [[0, 1]]


def test_links_merge_patients_and_a_changed_image_drops_its_link(tmp_path: Path) -> None:
    train = synthetic_manifest(n_patients=10, per_patient=2, n_test_patients=0)
    a, b = train.loc[0], train.loc[7]  # patients P_0000 and P_0003
    write_same_lesion_links(tmp_path, [{"image_a": a["image_name"], "image_b": b["image_name"],
                                        "sha256_a": a["content_sha256"], "sha256_b": b["content_sha256"]}])  # fmt: skip
    links = read_same_lesion_links(tmp_path, train)
    groups = fold_groups(train, links=links)
    assert groups[0] == groups[1] == groups[6] == groups[7] == "P_0000"
    assert (fold_groups(train, merge_duplicates=False, links=links) == train["patient_id"]).all()
    train.loc[7, "content_sha256"] = "replaced since the check"
    assert read_same_lesion_links(tmp_path, train) == []


@pytest.mark.shared
@pytest.mark.slow
def test_the_check_finds_ham_lesions_photographed_twice_under_two_patients(tmp_path: Path) -> None:
    """Real HAM10000 images, each given its own patient: the check pairs shots of one lesion
    (judged against lesion_id) and the folds put each found lesion in one group."""
    truth = pd.read_csv(require(LESIONS) / "train.csv")
    size = truth.groupby("lesion_id")["image_name"].transform("size")
    repeated = truth[size == 2].drop_duplicates("lesion_id").head(15)["lesion_id"]
    rows = pd.concat([truth[truth["lesion_id"].isin(repeated)], truth[size == 1].head(20)])
    rows.assign(patient_id=rows["image_name"]).to_csv(tmp_path / "train.csv", index=False)
    config = Stage1Config(train_csv=tmp_path / "train.csv", images_dir=LESIONS / "jpeg" / "train",
                          out_dir=tmp_path / "out", backbones=(f"local-dir:{lite0_dir()}",),
                          num_workers=0, progress=False)  # fmt: skip
    run_stage1(config)
    result = run_check(config)
    lesion = rows.set_index("image_name")["lesion_id"]
    found = [p for p in result["near_duplicates"] if "inliers" in p]
    assert result["same_lesion"]["searched"]
    assert all(lesion[p["image_a"]] == lesion[p["image_b"]] for p in found)  # no false pair
    assert len(found) >= 8  # of the 15 true pairs
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    groups = fold_groups(manifest, links=read_same_lesion_links(tmp_path / "out", manifest))
    by_name = dict(zip(manifest["image_name"], groups, strict=True))
    assert all(by_name[p["image_a"]] == by_name[p["image_b"]] for p in found)
    assert len(set(groups)) == len(manifest) - len(found)
    run_stage1(config)  # a later stage 1 run keeps listing the pairs whose images are unchanged
    again = json.loads((tmp_path / "out" / "data_check.json").read_text())["near_duplicates"]
    assert {(p["image_a"], p["image_b"]) for p in again if "inliers" in p} == {
        (p["image_a"], p["image_b"]) for p in found
    }
