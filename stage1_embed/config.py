"""Stage 1 settings: one frozen dataclass, defaults in code, CLI flags override them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .backbones import DEFAULT_BACKBONES
from .common import usable_cores
from .decode import DEFAULT_MAX_PIXELS
from .errors import ConfigError

DEFAULT_OUT_DIR = Path("data/out")
POOLINGS = ("avg", "max", "avgmax", "catavgmax")
STAGE_POOLINGS = ("avg", "pos-neg", "gem")  # stage_features.pool_stage


@dataclass(frozen=True)
class Stage1Config:
    data_dir: Path | None = None  # None: only the CSVs (and --images) named are read
    out_dir: Path = DEFAULT_OUT_DIR
    train_csv: Path | None = None
    test_csv: Path | None = None
    images_dir: Path | None = None
    image_format: str = "auto"
    backbones: tuple[str, ...] = DEFAULT_BACKBONES
    weights_dir: Path | None = None
    allow_random_init: bool = False
    random_init: bool = False
    input_size: int | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    colour_constancy: str = "none"  # none | shades-of-gray (preprocess.py), after the crop
    pooling: str = (
        "avg"  # timm's global_pool: avg | max | avgmax | catavgmax (avg and max side by side)
    )
    # what the embedding holds: head and/or stages from the end (last, last-1, ...); the last two
    # stages beat the head on both HAM sets (benchmarks/README.md, "Image feature candidates")
    stages: tuple[str, ...] = ("last", "last-1")
    stage_pooling: str = "avg"  # avg | pos-neg | gem (stage_features.py): how a stage is pooled
    tta: tuple[str, ...] = ()
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    num_workers: int | None = None  # None: chosen for the device and core count (auto_workers)
    chunk_size: int = 1024
    skip_missing: bool = False
    max_failures: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_shards: int = 1
    shard_index: int = 0
    progress: bool = True
    extra_data: tuple[Path, ...] = ()  # --extra-data folders: training rows only, see extra.py
    drop_extra_duplicates: bool = False
    train_only: bool = False  # an extra dataset: its test.csv (if any) is not read
    decode: str = (
        "auto"  # auto | pil | torchvision (batch_decode.py): torchvision on CUDA for JPEGs
    )
    engine: str = "auto"  # auto | torch | onnx (engines.py): ONNX Runtime on CPU by default
    model_dir: Path | None = None  # scoring: the saved model's backbones and preprocessing
    channel_order: str = "auto"  # auto | rgb | bgr: the images' stored channel order (colour.py)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ConfigError("--batch-size and --chunk-size must be at least 1.")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(
                f"--shard-index {self.shard_index} is outside 0..{self.num_shards - 1} "
                f"for --num-shards {self.num_shards}."
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N.")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision {self.precision!r}: use auto, fp32, bf16 or fp16.")
        if self.crop_mode not in (None, "center", "squash", "border"):
            raise ConfigError(f"--crop-mode {self.crop_mode!r}: use center, squash or border.")
        if self.colour_constancy not in ("none", "shades-of-gray"):
            raise ConfigError(
                f"--colour-constancy {self.colour_constancy!r}: use none or shades-of-gray."
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling {self.pooling!r}: use {', '.join(POOLINGS)}.")
        if (
            not self.stages
            or len(set(self.stages)) < len(self.stages)
            or not all(s == "head" or re.fullmatch(r"last(-[1-9])?", s) for s in self.stages)
        ):
            raise ConfigError(f"--stages {','.join(self.stages)!r}: name each once, as head or a "
                              "stage counted from the end (last, last-1, last-2, ...), e.g. "
                              "--stages last,last-1.")  # fmt: skip
        if self.pooling != "avg" and "head" not in self.stages:
            raise ConfigError(f"--pooling {self.pooling} pools the head's feature map, which "
                              f"--stages {','.join(self.stages)} leaves out: add head "
                              f"(--stages head,{','.join(self.stages)}) or drop --pooling.")  # fmt: skip
        if self.stage_pooling not in STAGE_POOLINGS:
            raise ConfigError(f"--stage-pooling {self.stage_pooling!r}: use "
                              f"{', '.join(STAGE_POOLINGS)}.")  # fmt: skip
        if self.stage_pooling != "avg" and self.stages == ("head",):
            raise ConfigError(f"--stage-pooling {self.stage_pooling} pools stages, and --stages "
                              "head names none: name some (--stages last,last-1) or drop "
                              "--stage-pooling.")  # fmt: skip
        if self.crop_pct is not None and not 0.1 <= self.crop_pct <= 1.0:
            raise ConfigError(f"--crop-pct {self.crop_pct}: use a fraction in (0.1, 1].")
        if self.decode not in ("auto", "pil", "torchvision"):
            raise ConfigError(f"--decode {self.decode!r}: use auto, pil or torchvision.")
        if self.engine not in ("auto", "torch", "onnx"):
            raise ConfigError(f"--engine {self.engine!r}: use auto, torch or onnx.")
        if self.channel_order not in ("auto", "rgb", "bgr"):
            raise ConfigError(f"--channel-order {self.channel_order!r}: use auto, rgb or bgr.")
        if self.max_failures < 0:
            raise ConfigError("--max-failures must be 0 or more.")

    def workers_for(self, device: str) -> int:
        return self.num_workers if self.num_workers is not None else auto_workers(device)

    @property
    def root(self) -> Path:
        """The dataset folder: --data, else the named train CSV's folder (where images are looked
        for when --images is not given). Nothing is read from a folder the user did not name."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        if self.train_csv is not None:
            return Path(self.train_csv).parent
        if self.images_dir is not None:
            return Path(self.images_dir)
        raise ConfigError(
            "Name the data: --data DIR (a Kaggle-layout folder), or --train-csv CSV [--test-csv "
            "CSV] [--images DIR]."
        )

    @property
    def dataset_name(self) -> str:
        """What outputs call the dataset: the --data folder's name; without --data, the --out
        folder's name when one was given (e.g. data/out/isic2020), else the train CSV's folder."""
        if self.data_dir is not None:
            return Path(self.data_dir).resolve().name
        if Path(self.out_dir) != DEFAULT_OUT_DIR:
            return Path(self.out_dir).resolve().name
        return self.root.resolve().name

    @property
    def train_csv_path(self) -> Path:
        return self.train_csv or self.root / "train.csv"

    @property
    def test_csv_path(self) -> Path | None:
        if self.train_only:
            return None
        if self.test_csv is not None:
            return self.test_csv
        if self.data_dir is None:  # only a --test-csv the user named is read
            return None
        default = self.data_dir / "test.csv"
        return default if default.is_file() else None


def auto_workers(device: str, cores: int | None = None) -> int:
    """Decode workers: on a GPU, enough to keep it fed; on a small CPU, none, because workers
    would only take cores from the model (benchmarks/README.md: 0.90 vs 0.85 on 2 cores)."""
    cores = cores or usable_cores()
    if device.startswith("cuda"):
        return max(2, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)
