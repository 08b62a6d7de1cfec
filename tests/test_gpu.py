"""CUDA paths: GPU JPEG decode, bf16 autocast, device selection. Skipped without a CUDA device;
on a GPU machine: ./run_tests.sh -m gpu"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stage1_embed.backbones import create_backbone, parse_backbone_spec
from stage1_embed.batch_decode import BatchDecoder, RawDataset, collate_raw, resolve_decode
from stage1_embed.config import Stage1Config
from stage1_embed.extract import Embedder, ImageDataset
from stage1_embed.pipeline import _embed_settings
from stage1_embed.preprocess import Preprocess
from stage1_embed.sources import create_source
from stage2_boost.boosters import resolve_device
from tests.conftest import lite0_dir

pytestmark = pytest.mark.gpu


def _refs(dataset_dir: Path):  # the tiny dataset's train images, in order
    source = create_source(dataset_dir, image_format="jpeg")
    names = sorted(p.stem for p in (dataset_dir / "jpeg" / "train").glob("*.jpg"))
    refs = source.index({"train": set(names)})
    return source, [refs[("train", n)] for n in names]


def test_gpu_decode_matches_the_cpu_path(tiny_dataset: Path) -> None:
    source, refs = _refs(tiny_dataset)
    preprocess = Preprocess(size=32, scale_size=36, interpolation="bilinear")
    raw = collate_raw([RawDataset(source, refs, preprocess)[i] for i in range(len(refs))])
    gpu = BatchDecoder(source, refs, preprocess, torch.device("cuda"))(raw)
    cpu = torch.stack([ImageDataset(source, refs, preprocess)[i][1] for i in range(len(refs))])
    assert gpu.pixels is not None and gpu.pixels.device.type == "cuda" and not gpu.failures
    diff = (gpu.pixels.cpu().int() - cpu.int()).abs().float()
    assert diff.mean() < 3.0  # another JPEG decoder and resize kernel: close, not equal


def test_bf16_autocast_embeddings_agree_with_fp32(tiny_dataset: Path) -> None:
    backbone = create_backbone(parse_backbone_spec(f"local-dir:{lite0_dir()}"))
    source, refs = _refs(tiny_dataset)
    pixels = torch.stack([ImageDataset(source, refs, Preprocess.from_data_config(backbone.data_config))[i][1]
                          for i in range(len(refs))])  # fmt: skip
    fp32 = Embedder(backbone.model, backbone.data_config, torch.device("cuda"))(pixels)
    bf16 = Embedder(
        backbone.model, backbone.data_config, torch.device("cuda"), amp_dtype=torch.bfloat16
    )(pixels)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99


def test_auto_device_selection_uses_the_gpu(tiny_dataset: Path) -> None:
    settings = _embed_settings(Stage1Config(data_dir=tiny_dataset), "jpeg")
    assert settings.device == "cuda" and settings.precision == "bf16" and settings.engine == "torch"
    assert settings.decode == "torchvision" == resolve_decode("auto", "cuda", "tfrecord")
    assert resolve_decode("auto", "cuda", "dicom") == "pil"
    assert resolve_device("auto") == "cuda"
