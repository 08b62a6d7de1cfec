"""Stage 1's engines: ONNX Runtime agrees with torch, is its own cache entry, falls back safely;
progress is log lines when not on a terminal."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stage1_embed import engines
from stage1_embed.config import Stage1Config
from stage1_embed.errors import ConfigError
from stage1_embed.pipeline import run_stage1
from stage1_embed.progress import LogProgress, progress_bar
from stage1_embed.schema import read_embeddings
from tests.conftest import lite0_dir

SLUG = "tf_efficientnet_lite0"


@pytest.fixture
def config(tiny_dataset: Path, tmp_path: Path) -> Stage1Config:
    spec = f"local-dir:{lite0_dir()}"
    return Stage1Config(data_dir=tiny_dataset, out_dir=tmp_path / "out", backbones=(spec,),
                        batch_size=4, chunk_size=8, num_workers=0, progress=False)  # fmt: skip


def table(out: Path):
    return read_embeddings(out / "embeddings" / f"{SLUG}.parquet")


def test_onnx_engine_matches_torch_and_is_its_own_cache_entry(
    config: Stage1Config, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    run_stage1(replace(config, engine="torch", out_dir=tmp_path / "torch"))
    onnx_run = run_stage1(replace(config, engine="onnx"))
    assert onnx_run.results[0].status == "computed"
    a, b = table(tmp_path / "torch"), table(config.out_dir)
    assert b.provenance["engine"] == b.provenance["engine_used"] == "onnx"
    assert a.provenance["engine"] == "torch"
    cosine = (
        (a.vectors * b.vectors).sum(1)
        / np.linalg.norm(a.vectors, axis=1)
        / np.linalg.norm(b.vectors, axis=1)
    )
    assert cosine.min() >= 0.9999 and np.abs(a.vectors - b.vectors).max() < 1e-3
    assert run_stage1(replace(config, engine="onnx")).results[0].status == "cached"
    assert run_stage1(replace(config, engine="torch")).results[0].status == "computed"
    assert engines.resolve_engine("auto", "cpu") == "onnx"
    assert engines.resolve_engine("auto", "cuda") == "torch"


def test_another_pooling_is_its_own_export_and_its_own_embeddings(config: Stage1Config) -> None:
    """timm's catavgmax pooling (average and maximum side by side) doubles the width; its ONNX
    export is a file of its own, never the average-pooled one, and agrees with torch."""
    pytest.importorskip("onnxruntime")
    plain = run_stage1(
        replace(config, engine="onnx", stages=("head",), out_dir=config.out_dir / "avg")
    )
    both = run_stage1(replace(config, engine="onnx", pooling="catavgmax", stages=("head",)))
    assert plain.results[0].status == both.results[0].status == "computed"
    wide = table(config.out_dir)
    assert wide.vectors.shape[1] == 2 * table(config.out_dir / "avg").vectors.shape[1] == 2560
    assert wide.provenance["preprocessing"]["global_pool"] == "catavgmax"
    assert wide.provenance["engine_used"] == "onnx"
    assert len(list((engines.cache_dir() / "onnx").glob("*catavgmax*.onnx"))) == 1


def test_stages_are_their_own_export_and_agree_with_the_models_own_stages(
    config: Stage1Config, tmp_path: Path
) -> None:
    """--stages last,last-1: Lite0's two last stages average-pooled (320 + 112 channels, no
    head), the same numbers through torch and ONNX and through timm's own feature extractor."""
    pytest.importorskip("onnxruntime")
    import timm

    stages = ("last", "last-1")
    run_stage1(replace(config, engine="torch", stages=stages, out_dir=tmp_path / "torch"))
    assert run_stage1(replace(config, engine="onnx", stages=stages)).results[0].status == "computed"
    a, b = table(tmp_path / "torch"), table(config.out_dir)
    assert a.vectors.shape[1] == 112 + 320
    assert b.provenance["preprocessing"]["stages"] == ["last", "last-1"]
    assert b.provenance["engine_used"] == "onnx" and np.abs(a.vectors - b.vectors).max() < 1e-3
    assert len(list((engines.cache_dir() / "onnx").glob("*stages-last-last-1*.onnx"))) == 1
    # the reference: timm's features_only model on one image, preprocessed as stage 1 does
    reference = timm.create_model(f"local-dir:{lite0_dir()}", pretrained=True, features_only=True,
                                  out_indices=(3, 4)).eval()  # fmt: skip
    from stage1_embed.backbones import create_backbone, parse_backbone_spec

    ours = create_backbone(parse_backbone_spec(config.backbones[0]), stages=stages).model
    pixels = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = torch.cat([m.mean((2, 3)) for m in reference(pixels)], 1)
        assert torch.allclose(ours(pixels), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="has 5 stages"):
        create_backbone(parse_backbone_spec(config.backbones[0]), stages=("last-7",))
    with pytest.raises(ConfigError, match="name each once"):
        replace(config, stages=("-1",))
    with pytest.raises(ConfigError, match="add head"):
        replace(config, pooling="max")  # the default stages have no head to pool


def test_a_stage_pooling_is_its_own_export_and_pools_as_its_definition_says(
    config: Stage1Config, tmp_path: Path
) -> None:
    """--stage-pooling pos-neg: each channel's positive and negative averages side by side (twice
    the width, their difference the plain average), the same through ONNX and torch, its own
    export and its own embeddings; gem: the cube root of the mean cube of the positive part."""
    pytest.importorskip("onnxruntime")
    from stage1_embed.backbones import create_backbone, parse_backbone_spec

    stages = ("last", "last-1")
    run_stage1(replace(config, stages=stages, out_dir=tmp_path / "avg"))
    run_stage1(replace(config, engine="torch", stage_pooling="pos-neg", out_dir=tmp_path / "torch"))
    assert run_stage1(replace(config, stage_pooling="pos-neg")).results[0].status == "computed"
    plain, a, b = table(tmp_path / "avg"), table(tmp_path / "torch"), table(config.out_dir)
    assert b.vectors.shape[1] == 2 * plain.vectors.shape[1] == 2 * (112 + 320)
    assert b.provenance["preprocessing"]["stage_pooling"] == "pos-neg"
    assert "stage_pooling" not in plain.provenance["preprocessing"]  # earlier runs' digests hold
    assert b.provenance["engine_used"] == "onnx" and np.abs(a.vectors - b.vectors).max() < 1e-3
    assert len(list((engines.cache_dir() / "onnx").glob("*last-1-pos-neg*.onnx"))) == 1
    positive, negative = np.split(b.vectors[:, : 2 * 112], 2, axis=1)  # stage last-1 comes first
    assert np.abs((positive - negative) - plain.vectors[:, :112]).max() < 1e-3
    assert positive.min() >= 0 and negative.min() >= 0 and negative.max() > 0
    spec = parse_backbone_spec(config.backbones[0])
    gem = create_backbone(spec, stages=("last",), stage_pooling="gem").model
    maps = create_backbone(spec, stages=("last",)).model.model.forward_intermediates(
        pixels := torch.rand(2, 3, 224, 224), indices=[4], intermediates_only=True
    )[0]
    with torch.no_grad():
        expected = maps.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)
        assert torch.allclose(gem(pixels), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="--stages head names none"):
        replace(config, stages=("head",), stage_pooling="gem")


def test_an_export_that_disagrees_falls_back_to_torch(
    config: Stage1Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:  # fmt: skip
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MELANOMA_STACK_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(engines, "MIN_COSINE", 1.5)  # no export can pass
    with caplog.at_level(logging.WARNING):
        run_stage1(replace(config, engine="onnx"))
    assert table(config.out_dir).provenance["engine_used"] == "torch"
    assert "using torch" in caplog.text


def test_progress_is_log_lines_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(progress_bar(10, "x"), LogProgress)  # pytest captures stderr: not a tty
    bar = LogProgress(100, "lite0", every=0.0)
    with caplog.at_level(logging.INFO):
        bar.update(40)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("lite0: 40/100 images") and "\r" not in "".join(lines)


def test_onnx_micro_batches_give_the_whole_batch_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine splits stage 1's batches for speed; a batch that is not a multiple of the split
    (and one smaller than it) comes back whole, in order, as one run of the whole batch gives."""
    pytest.importorskip("onnxruntime")
    from stage1_embed.backbones import create_backbone, parse_backbone_spec

    backbone = create_backbone(parse_backbone_spec("resnet18"), tmp_path, random_init=True,
                               input_size=64)  # fmt: skip
    path = tmp_path / "resnet18.onnx"
    engines._export(backbone, path)
    embedder = engines.OnnxEmbedder(path)
    pixels = torch.randint(0, 256, (engines.ONNX_MICRO_BATCH + 3, 3, 64, 64), dtype=torch.uint8)
    split = embedder(pixels)
    monkeypatch.setattr(engines, "ONNX_MICRO_BATCH", 1000)
    whole = embedder(pixels)
    assert split.shape == whole.shape == (len(pixels), backbone.num_features)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embedder(pixels[:2]), whole[:2], rtol=1e-5, atol=1e-5)


def test_threaded_cpu_pipeline_keeps_order_and_failures(tiny_dataset: Path) -> None:
    """One thread per core runs whole batches; results come back in batch order, with the same
    embeddings and per-image failures as the sequential loop."""
    from stage1_embed.cpu_pipeline import embedded_in_threads
    from stage1_embed.extract import ImageDataset, collate
    from stage1_embed.preprocess import Preprocess
    from stage1_embed.sources import create_source

    folder = tiny_dataset / "jpeg" / "train"
    (folder / "IMG_0005.jpg").write_bytes(b"not a jpeg")
    source = create_source(tiny_dataset, image_format="jpeg")
    names = sorted(p.stem for p in folder.glob("*.jpg"))
    found = source.index({"train": set(names)})
    dataset = ImageDataset(
        source, [found[("train", n)] for n in names], Preprocess(32, 36, "bicubic")
    )
    batches = [list(range(start, min(start + 3, len(names)))) for start in range(0, len(names), 3)]

    def embed(pixels: torch.Tensor) -> np.ndarray:
        return pixels.float().mean(dim=(2, 3)).numpy()

    threaded = list(embedded_in_threads(dataset, batches, embed, threads=3))
    sequential = [collate([dataset[i] for i in b]) for b in batches]
    assert len(threaded) == len(sequential)
    for (batch, vectors), expected in zip(threaded, sequential, strict=True):
        assert batch.indices == expected.indices and batch.failures == expected.failures
        assert expected.pixels is not None and vectors is not None
        np.testing.assert_array_equal(vectors, embed(expected.pixels))
    failed = [names[i] for batch, _ in threaded for i, _ in batch.failures]
    assert failed == ["IMG_0005"]


def test_onnx_on_a_many_core_cpu_decodes_in_threads_not_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode processes only pay beside torch; ONNX Runtime gets a thread per core instead,
    unless --workers asks for processes."""
    from stage1_embed import config as config_module
    from stage1_embed.pipeline import _embed_settings

    monkeypatch.setattr(config_module, "usable_cores", lambda: 16)
    base = Stage1Config(data_dir=tmp_path, out_dir=tmp_path / "out", device="cpu")
    assert _embed_settings(replace(base, engine="onnx")).num_workers == 0
    assert _embed_settings(replace(base, engine="torch")).num_workers == 4
    assert _embed_settings(replace(base, engine="onnx", num_workers=3)).num_workers == 3


def test_a_model_trained_on_stages_scores_with_its_own_stages(
    config: Stage1Config, tmp_path: Path
) -> None:
    """The stages are part of the preprocessing a saved model records: scoring with it embeds
    the same stages whatever --stages says, and gives the training run's own test predictions."""
    from stage1_embed.kaggle_layout import encode_jpeg, write_kaggle_dataset
    from stage2_boost.config import Stage2Config
    from stage2_boost.model.predict import run_predict
    from stage2_boost.train import run_training
    from tests.conftest import tiny_pixels, tiny_table
    from tests.stage2.helpers import FAST

    train_rows = tiny_table(n_patients=10)  # enough malignant images for three folds
    test_rows = tiny_table(1, 3).assign(image_name=lambda t: "TEST_" + t["image_name"])
    names = [*train_rows["image_name"], *test_rows["image_name"]]
    pixels = tiny_pixels(len(names), seed=3)
    data = tmp_path / "data"
    write_kaggle_dataset(data, {"train": train_rows, "test": test_rows.drop(columns="target")},
                         {n: encode_jpeg(p) for n, p in zip(names, pixels, strict=True)})  # fmt: skip
    config = replace(config, data_dir=data)
    run_stage1(replace(config, stages=("last-1",)))
    train = Stage2Config(
        features_dir=config.out_dir, feature_groups=("metadata", "embedding"), **FAST
    )
    run_training(train)
    model = train.stage2_dir / "model"
    scored = tmp_path / "scored"
    run_stage1(replace(config, out_dir=scored, model_dir=model, skip_missing=True))
    assert table(scored).vectors.shape[1] == 112
    assert table(scored).provenance["preprocessing"]["stages"] == ["last-1"]
    predicted = run_predict(model, scored, tmp_path / "p", split="test").predictions
    expected = pd.read_parquet(train.stage2_dir / "test_pred.parquet")
    merged = predicted.merge(expected, on="image_name", suffixes=("", "_train"))
    assert len(merged) == len(expected) > 0
    np.testing.assert_allclose(merged["probability"], merged["probability_train"], atol=1e-5)
