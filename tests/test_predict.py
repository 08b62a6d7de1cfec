"""The saved model: it reproduces the run's test predictions from a fresh folder in all three
formats, scores bare folders, is batch-independent, and refuses damaged or foreign input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage1_embed.common import seal
from stage1_embed.config import Stage1Config
from stage1_embed.errors import ConfigError, WeightsError
from stage1_embed.pipeline import run_stage1
from stage2_boost.errors import ModelError
from stage2_boost.model.load import load_model
from stage2_boost.model.predict import run_predict
from tests.conftest import REPO, lite0_dir

pytestmark = pytest.mark.slow
FORMAT_FILES = {"jpeg": "jpeg/test", "dicom": "test", "tfrecord": "tfrecords"}


@pytest.fixture(scope="module")
def trained(demo_model: dict[str, Path]) -> tuple[Path, Path]:
    return demo_model["demo"], demo_model["model"]


def score(model: Path, data: Path, out: Path, *extra: str) -> pd.DataFrame:
    """``run_all.sh --model`` as a user runs it."""
    done = subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(data), "--out", str(out),
                           *extra], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(out / "predictions.csv")


@pytest.mark.parametrize("image_format", sorted(FORMAT_FILES))
def test_a_fresh_folder_of_the_test_images_reproduces_the_run(
    trained: tuple[Path, Path], tmp_path: Path, image_format: str
) -> None:
    demo, model = trained
    fresh = tmp_path / "new-clinic"
    fresh.mkdir()
    shutil.copy(demo / "test.csv", fresh / "test.csv")  # no train.csv
    source = demo / FORMAT_FILES[image_format]
    target = fresh / FORMAT_FILES[image_format]
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and ("test" in path.name or image_format != "tfrecord"):
            shutil.copy(path, target / path.name)
    predictions = score(model, fresh, tmp_path / "out").set_index("image_name")
    expected = pd.read_parquet(model.parent / "test_pred.parquet").set_index("image_name")
    assert sorted(predictions.index) == sorted(expected.index)
    for column in ("lgbm", "xgb", "blend", "probability"):
        diff = np.abs(predictions.loc[expected.index, column] - expected[column]).max()
        assert diff <= 1e-6, (column, diff)
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert list(submission.columns) == ["image_name", "target"] and len(submission) == len(expected)


def test_bare_folder_and_batch_independence(trained: tuple[Path, Path], tmp_path: Path) -> None:
    demo, model = trained
    test = pd.read_csv(demo / "test.csv")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in test["image_name"]:  # names as archives write them
        shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", bare / f"{name}.JPG")
    scored = score(model, bare, tmp_path / "bare-out", "--explain")
    assert len(scored) == len(test) and (scored["read_status"] == "ok").all()
    assert (scored["patient_images"] == 1).all() and scored["age_approx"].isna().all()
    assert scored["top_reasons"].str.contains(r"[+-]\d").all()
    explanations = pd.read_csv(tmp_path / "bare-out" / "explanations.csv")
    assert {"baseline", "embedding"} <= set(explanations["feature_group"])
    expected = pd.read_parquet(model.parent / "test_pred.parquet").set_index("image_name")
    assert not np.allclose(scored.set_index("image_name").loc[expected.index, "probability"],
                           expected["probability"])  # fmt: skip
    # three patients alone get the numbers they get among all the others
    few = test[test["patient_id"].isin(test["patient_id"].unique()[:3])]
    alone = tmp_path / "alone"
    (alone / "jpeg" / "test").mkdir(parents=True)
    few.to_csv(alone / "test.csv", index=False)
    for name in few["image_name"]:
        shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", alone / "jpeg" / "test")
    small = score(model, alone, tmp_path / "alone-out").set_index("image_name")
    np.testing.assert_allclose(
        small["probability"], expected.loc[small.index, "probability"], atol=1e-12
    )


def test_unreadable_images_get_a_status_not_a_probability(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    fresh = tmp_path / "broken"
    (fresh / "jpeg" / "test").mkdir(parents=True)
    shutil.copy(demo / "test.csv", fresh / "test.csv")
    names = pd.read_csv(demo / "test.csv")["image_name"].tolist()
    for name in names[1:]:  # the first is missing
        shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", fresh / "jpeg" / "test")
    (fresh / "jpeg" / "test" / f"{names[1]}.jpg").write_bytes(b"not a jpeg")
    scored = score(model, fresh, tmp_path / "out").set_index("image_name")
    assert scored.loc[names[0], "read_status"] == "missing"
    assert scored.loc[names[1], "read_status"] == "failed"
    assert np.isnan(scored.loc[names[:2], "probability"]).all()
    assert scored["probability"].notna().sum() == len(names) - 2


def test_tampered_truncated_foreign_and_newer_models_are_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, original = trained
    load_model(original)  # the untouched model loads
    cases = {
        "booster": (lambda m: (m / "boosters" / "lgbm_fold0.txt").open("a").write(" "), "has changed"),
        "truncated": (lambda m: (m / "state" / "fold1.safetensors").write_bytes(b"\0" * 8), "has changed"),
        "missing": (lambda m: (m / "boosters" / "xgb_fold2.ubj").unlink(), "is missing"),
        "newer": (lambda m: _edit_manifest(m, schema_version=99), "newer melanoma-stack"),
        "foreign": (lambda m: (m / "model.json").write_text("{}"), "not a melanoma-stack model"),
        "damaged": (lambda m: (m / "model.json").write_text("{"), "damaged"),
        "edited": (lambda m: _edit_manifest(m, blend={"platt": {"slope": 9.0, "intercept": 0.0}}),
                   r"model\.json has been edited"),
    }  # fmt: skip
    for name, (damage, message) in cases.items():
        copy = tmp_path / name
        shutil.copytree(original, copy)
        damage(copy)
        with pytest.raises(ModelError, match=message):
            load_model(copy)
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(tmp_path)


def test_other_weights_than_the_models_stop_stage_1(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, original = trained
    model = tmp_path / "model"
    shutil.copytree(original, model)
    manifest = json.loads((model / "model.json").read_text())
    (slug,) = manifest["backbones"]
    manifest["backbones"][slug]["weights"]["sha256"] = "0" * 64
    (model / "model.json").write_text(json.dumps(seal(manifest)))  # as if trained with them
    config = Stage1Config(data_dir=demo, out_dir=tmp_path / "f", backbones=(manifest["backbones"][slug]["backbone_spec"],),
                          model_dir=model, num_workers=0, progress=False)  # fmt: skip
    with pytest.raises(WeightsError, match="trained with weights of sha256 0000"):
        run_stage1(config)


def test_an_edited_model_json_stops_stage_1_before_it_embeds(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """model.json covers itself: a changed calibration slope gave exit 0 and other
    probabilities before; now one clear error, before any image is embedded."""
    demo, original = trained
    model = tmp_path / "model"
    shutil.copytree(original, model)
    _edit_manifest(model, blend={"method": "edited", "platt": {"slope": 9.0, "intercept": 0.0}})
    (slug,) = json.loads((model / "model.json").read_text())["backbones"]
    spec = json.loads((model / "model.json").read_text())["backbones"][slug]["backbone_spec"]
    config = Stage1Config(data_dir=demo, out_dir=tmp_path / "f", backbones=(spec,), model_dir=model,
                          num_workers=0, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.json has been edited"):
        run_stage1(config)
    assert not (tmp_path / "f" / "embeddings").exists()


def test_predict_refuses_features_made_with_other_preprocessing(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    spec = f"local-dir:{lite0_dir()}"
    features = tmp_path / "features"
    run_stage1(Stage1Config(data_dir=demo, out_dir=features, backbones=(spec,), input_size=256,
                            image_format="jpeg", num_workers=0, progress=False))  # fmt: skip
    from stage2_boost.errors import ContractError

    with pytest.raises(ContractError, match="preprocessing"):
        run_predict(model, features, tmp_path / "out")


def _edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "model.json").read_text())
    manifest.update(changes)
    (folder / "model.json").write_text(json.dumps(manifest))


def test_scoring_never_replaces_the_features_a_model_was_trained_on(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    features = model.parent.parent
    bare = tmp_path / "demo"  # a bare folder that happens to share the dataset's name
    bare.mkdir()
    name = pd.read_csv(demo / "test.csv")["image_name"].iloc[0]
    shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", bare)
    before = (features / "manifest.parquet").read_bytes()
    done = subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(bare), "--out",
                           str(features)], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:]
    assert "holds the training features" in done.stderr and "-scored" in done.stderr
    assert (features / "manifest.parquet").read_bytes() == before


def test_a_bare_folder_scores_every_image_file_and_says_what_it_skipped(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    names = pd.read_csv(demo / "test.csv")["image_name"].tolist()
    bare = tmp_path / "bare"
    (bare / "sub").mkdir(parents=True)
    shutil.copy(demo / "jpeg" / "test" / f"{names[0]}.jpg", bare / "Z.jpg")
    png = bare / "Z.png"  # the same stem, another image
    from PIL import Image

    Image.open(demo / "jpeg" / "test" / f"{names[1]}.jpg").save(png)
    shutil.copy(demo / "jpeg" / "test" / f"{names[2]}.jpg", bare / "sub" / "a.jpg")
    (bare / "notes.txt").write_text("not an image")
    done = subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(bare), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    scored = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert sorted(scored["image_name"]) == ["Z.jpg", "Z.png"]
    assert scored["probability"].nunique() == 2  # two images, two different scores
    assert "skipped 1 file(s) that are not JPEG/PNG (notes.txt)" in done.stdout
    assert "skipped 1 image file(s) in subfolders (sub/a.jpg)" in done.stdout
    assert "each of those is scored under its full file name" in done.stderr


def test_labelled_images_are_scored_with_their_target_and_an_auc(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    done = subprocess.run(["./run_all.sh", "--model", str(model), "--data", str(demo), "--split",
                           "train", "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    scored = pd.read_csv(tmp_path / "out" / "predictions.csv")
    train = pd.read_csv(demo / "train.csv").set_index("image_name")
    assert (
        scored["target"].to_numpy() == train.loc[scored["image_name"], "target"].to_numpy()
    ).all()
    assert "labelled: " in done.stdout and "auc 0." in done.stdout and "pauc80 0." in done.stdout


def test_a_test_csv_of_names_and_patients_with_jpg_suffixes_is_scored(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    demo, model = trained
    test = pd.read_csv(demo / "test.csv")
    fresh = tmp_path / "clinic"
    (fresh / "jpeg" / "test").mkdir(parents=True)
    test.assign(image_name=test["image_name"] + ".jpg")[["image_name", "patient_id"]].to_csv(
        fresh / "test.csv", index=False
    )
    for name in test["image_name"]:
        shutil.copy(demo / "jpeg" / "test" / f"{name}.jpg", fresh / "jpeg" / "test")
    scored = score(model, fresh, tmp_path / "out")
    assert len(scored) == len(test) and (scored["read_status"] == "ok").all()
    assert scored["image_name"].str.endswith(".jpg").all() and scored["sex"].isna().all()
