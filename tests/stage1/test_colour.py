"""Colour order: swapped red and blue are found per source, swapped back everywhere images are
read, and mixed or thin evidence is never guessed at (issue 28, colour order)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stage1_embed.colour import blue_minus_red, judge, resolve_orders
from stage1_embed.config import Stage1Config
from stage1_embed.errors import ConfigError
from stage1_embed.pipeline import format_summary, run_stage1
from stage1_embed.schema import embeddings_path, read_manifest
from tests.conftest import lite0_dir, tiny_table


def skin(n: int, seed: int = 0, size: int = 64) -> list[np.ndarray]:
    """Red-dominant, lesion-like images: a darker brown blob on pink skin."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        base = np.array([205, 150, 135]) + rng.normal(0, 8, 3)
        blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < rng.uniform(80, 300)
        img = np.where(blob[..., None], base * 0.55, base) + rng.normal(0, 6, (size, size, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def folder(root: Path, pixels: list[np.ndarray], swap: list[bool]) -> Path:
    """A Kaggle-layout folder of PNGs (lossless: a swap is exactly undone); ``swap[i]``: the
    i-th file stores blue in the red channel, as an OpenCV array written as RGB would."""
    table = tiny_table(n_patients=len(pixels) // 3, per_patient=3)
    (root / "jpeg" / "train").mkdir(parents=True)
    for name, image, swapped in zip(table["image_name"], pixels, swap, strict=True):
        Image.fromarray(image[..., ::-1] if swapped else image).save(
            root / "jpeg" / "train" / f"{name}.png"
        )
    table.to_csv(root / "train.csv", index=False)
    return root


@pytest.mark.parametrize(
    ("blue", "red", "grey", "verdict"),
    [(0, 30, 0, "rgb"), (30, 0, 0, "bgr"), (28, 2, 0, "bgr"), (15, 15, 0, "mixed"),
     (0, 1, 0, "undetermined"), (0, 0, 30, "undetermined"), (0, 0, 0, "undetermined")],
)  # fmt: skip
def test_judge(blue: int, red: int, grey: int, verdict: str) -> None:
    balances = {f"b{i}": 20.0 for i in range(blue)} | {f"r{i}": -20.0 for i in range(red)}
    found = judge(balances | {f"g{i}": 0.5 for i in range(grey)})
    assert found.verdict == verdict, found.reason
    if verdict == "bgr" and red:
        assert found.disagreeing == ["r0", "r1"][:red]


def test_mixed_evidence_is_refused_naming_the_flag() -> None:
    mixed = judge({f"b{i}": 20.0 for i in range(15)} | {f"r{i}": -20.0 for i in range(15)})
    with pytest.raises(ConfigError, match="--channel-order rgb"):
        resolve_orders("auto", {"train": mixed})
    assert resolve_orders("bgr", {"train": mixed}) == {"train": "bgr"}  # the user decides


def test_thin_evidence_keeps_the_images_as_stored() -> None:
    one = judge({"only": -30.0})
    assert one.verdict == "undetermined" and "too few" in one.reason
    assert resolve_orders("auto", {"train": one}) == {"train": "rgb"}
    assert judge({}).reason == "no readable image to judge"


@pytest.fixture
def lite0() -> str:
    return f"local-dir:{lite0_dir()}"


def _embed(data: Path, out: Path, spec: str, order: str = "auto") -> tuple[np.ndarray, dict]:
    summary = run_stage1(Stage1Config(data_dir=data, out_dir=out, backbones=(spec,),
                                      num_workers=0, progress=False, channel_order=order))  # fmt: skip
    table = pd.read_parquet(embeddings_path(out, "tf_efficientnet_lite0")).sort_values("image_name")
    _, provenance = read_manifest(out)
    provenance["summary"] = format_summary(summary)
    return np.stack(table["embedding"].to_numpy()), provenance


def test_swapped_files_give_the_embeddings_and_thumbnails_of_natural_ones(
    tmp_path: Path, lite0: str
) -> None:
    from stage1_embed.thumbnails import make_thumbnails

    pixels = skin(12)
    natural, prov_n = _embed(folder(tmp_path / "rgb", pixels, [False] * 12), tmp_path / "o1", lite0)
    swapped_dir = folder(tmp_path / "bgr", pixels, [True] * 12)
    fixed, prov_s = _embed(swapped_dir, tmp_path / "o2", lite0)
    assert prov_n["channel_order"]["train"]["verdict"] == "rgb"
    colours = prov_s["channel_order"]["train"]
    assert (colours["verdict"], colours["stored"]) == ("bgr", "bgr")
    assert "swapped back to RGB" in prov_s["summary"]
    np.testing.assert_allclose(fixed, natural, atol=1e-5)
    as_stored, _ = _embed(swapped_dir, tmp_path / "o3", lite0, order="rgb")
    assert np.abs(as_stored - natural).max() > 1e-2  # blue skin embeds differently
    thumbs = make_thumbnails(tmp_path / "o2", [("train", "IMG_0000")])
    thumb = Image.open(io.BytesIO(thumbs[("train", "IMG_0000")]))
    assert blue_minus_red(thumb) < -20  # shown in natural colours: red skin


def test_a_folder_mixing_both_orders_is_refused(tmp_path: Path, lite0: str) -> None:
    data = folder(tmp_path / "mix", skin(24), [i % 2 == 0 for i in range(24)])
    with pytest.raises(ConfigError, match="mix colour orders"):
        run_stage1(Stage1Config(data_dir=data, out_dir=tmp_path / "o", backbones=(lite0,),
                                num_workers=0, progress=False))  # fmt: skip


def test_a_model_scores_swapped_files_as_it_scores_natural_ones(tmp_path: Path, lite0: str) -> None:
    """The saved model records its training images' colours; stage 1 for scoring settles each
    scored source's order, so both orders of the same images get the same probabilities."""
    import json

    from stage2_boost.config import Stage2Config
    from stage2_boost.model.predict import run_predict
    from stage2_boost.train import run_training
    from tests.stage2.helpers import FAST

    pixels = skin(24, seed=1)
    train = folder(tmp_path / "train", pixels, [True] * 24)  # trained on swapped files
    _embed(train, tmp_path / "features", lite0)
    config = Stage2Config(features_dir=tmp_path / "features", feature_groups=("metadata", "probe"),
                          **FAST)  # fmt: skip
    run_training(config)
    model = config.stage2_dir / "model"
    backbone = json.loads((model / "model.json").read_text())["backbones"]["tf_efficientnet_lite0"]
    assert backbone["channel_order"] == {"train": "bgr"}
    scored = {}
    for name, swap in (("natural", False), ("swapped", True)):
        data = folder(tmp_path / f"new-{name}", pixels, [swap] * 24)
        run_stage1(Stage1Config(data_dir=data, out_dir=tmp_path / f"f-{name}", backbones=(lite0,),
                                model_dir=model, skip_missing=True, num_workers=0, progress=False))  # fmt: skip
        result = run_predict(model, tmp_path / f"f-{name}", tmp_path / f"p-{name}", split="train")
        scored[name] = result.predictions.set_index("image_name")["probability"].sort_index()
    np.testing.assert_allclose(scored["natural"], scored["swapped"], atol=1e-6)
