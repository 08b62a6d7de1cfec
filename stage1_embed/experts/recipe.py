"""The fine-tuning recipe: what the SIIM-ISIC winners' write-ups describe, scaled per device."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import ConfigError

BALANCE = ("weight", "none")


@dataclass(frozen=True)
class Recipe:
    """Every knob of the fine-tuning; all of them are on the command line."""

    image_size: int = 128
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-4  # AdamW, linear warm-up then cosine decay to 1% of it
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    balance: str = "weight"  # positive-class loss weight sqrt(n_neg / n_pos); or none
    scale_min: float = 0.7  # RandomResizedCrop scale range (scale_min, 1)
    rotate: bool = True  # random 90-degree turns and flips (lesions have no up)
    color: float = 0.2  # ColorJitter strength (brightness, contrast, saturation); hue / 10
    tta: tuple[str, ...] = ("hflip", "vflip")  # views averaged at prediction
    ema: float = 0.0  # decay per step of an average of the weights that is scored (0: off)
    layer_decay: float = 1.0  # each backbone block learns this factor slower than the next (1: off)
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs and their labels (0: off)
    inner_fraction: float = 0.2  # patients of the training part that choose the epoch
    precision: str = "fp32"  # bf16 autocast on CUDA
    seed: int = 42

    def __post_init__(self) -> None:
        if self.balance not in BALANCE:
            raise ConfigError(f"--balance {self.balance!r}: use {' or '.join(BALANCE)}.")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 32:
            raise ConfigError("--epochs >= 1, --batch-size >= 2 and --image-size >= 32, please.")
        if not 0 < self.scale_min <= 1 or not 0 < self.inner_fraction < 0.5:
            raise ConfigError("--scale-min must be in (0, 1] and the inner fraction in (0, 0.5).")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"--ema {self.ema}: a decay in [0, 1), e.g. 0.99 (0: no average).")
        if not 0 < self.layer_decay <= 1 or self.mixup < 0:
            raise ConfigError(f"--layer-decay {self.layer_decay} must be in (0, 1], e.g. 0.85 (1: "
                              f"one rate), and --mixup {self.mixup} >= 0, e.g. 0.4 (0: off).")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["tta"] = list(self.tta)
        return values

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def default_recipe(device: str, **overrides: Any) -> Recipe:
    """CPU: small images, few epochs (minutes on the HAM half); CUDA: the winners' scale."""
    base = Recipe()
    if device.startswith("cuda"):
        base = replace(base, image_size=384, epochs=12, batch_size=64, lr=2e-4, precision="bf16")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
