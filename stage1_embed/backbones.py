"""Backbone specs (timm's naming forms) -> a frozen feature extractor plus its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, WeightsError
from .schema import backbone_slug
from .weights import ResolvedWeights, file_weights, local_dir_weights, resolve_hub_weights

DEFAULT_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
# For users with internet and a GPU: stronger ImageNet backbones from the timm hub.
HUB_PRESET = (
    "tf_efficientnet_b3.ns_jft_in1k",
    "tf_efficientnet_b4.ns_jft_in1k",
    "convnext_small.fb_in22k_ft_in1k",
    "resnet50.a1_in1k",
)
SPEC_FORMS = (
    "'arch' or 'arch.tag' (timm hub or --weights-dir), 'hf-hub:org/name', "
    "'local-dir:/path/to/folder' (config.json + model.safetensors), or 'arch@/path/to/weights.safetensors'"
)


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed backbone spec; ``slug`` names its output file and stage-2 feature prefix."""

    text: str
    form: str  # hub | hf-hub | local-dir | file
    name: str
    path: Path | None = None

    @property
    def slug(self) -> str:
        return backbone_slug(self.text)


@dataclass(frozen=True)
class Backbone:
    """A built model, its resolved preprocessing and the weights' provenance."""

    spec: BackboneSpec
    model: Any  # torch.nn.Module
    data_config: dict[str, Any]
    weights: ResolvedWeights
    architecture: str
    num_features: int
    extra: dict[str, Any] = field(default_factory=dict)


def parse_backbone_spec(text: str) -> BackboneSpec:
    """Parse one spec in any of timm's forms (see ``SPEC_FORMS``)."""
    text = text.strip()
    if not text:
        raise ConfigError(f"Empty backbone spec. Use {SPEC_FORMS}.")
    if text.startswith("local-dir:"):
        return BackboneSpec(text, "local-dir", text, Path(text.removeprefix("local-dir:")))
    if text.startswith("hf-hub:"):
        return BackboneSpec(text, "hf-hub", text.removeprefix("hf-hub:"))
    if "@" in text:
        arch, _, path = text.partition("@")
        _check_known_architecture(arch)
        return BackboneSpec(text, "file", arch, Path(path))
    _check_known_architecture(text.split(".")[0])
    return BackboneSpec(text, "hub", text)


def parse_backbones(texts: tuple[str, ...]) -> list[BackboneSpec]:
    """The specs of one run, each writing its own embeddings file."""
    specs = [parse_backbone_spec(text) for text in texts]
    slugs = [s.slug for s in specs]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"Backbones {slugs} repeat a name; each must write its own file.")
    return specs


def resolve_weights(
    spec: BackboneSpec, weights_dir: Path | None, allow_random: bool
) -> ResolvedWeights:
    """Where this spec's weights come from (nothing is built yet)."""
    if spec.form == "local-dir":
        assert spec.path is not None
        return local_dir_weights(spec.path)
    if spec.form == "file":
        assert spec.path is not None
        return file_weights(spec.name, spec.path)
    if spec.form == "hf-hub":
        return ResolvedWeights(spec.text, True, "hf-hub", spec.text)
    return resolve_hub_weights(spec.name, weights_dir, allow_random)


def create_backbone(
    spec: BackboneSpec,
    weights_dir: Path | None = None,
    *,
    allow_random: bool = False,
    random_init: bool = False,
    input_size: int | None = None,
    crop_pct: float | None = None,
    crop_mode: str | None = None,
    colour_constancy: str | None = None,
    pooling: str | None = None,
    stages: tuple[str, ...] | None = None,
    stage_pooling: str | None = None,
) -> Backbone:
    """Build ``spec`` in eval mode: its output is the pooled pre-logits (``num_classes=0``), or
    with ``stages`` other than ``("head",)`` the pooled stages of stage_features.StageFeatures."""
    import timm

    weights = (
        ResolvedWeights(_random_name(spec), False, "random-init")
        if random_init
        else resolve_weights(spec, weights_dir, allow_random)
    )
    try:
        model = timm.create_model(
            weights.model_name,
            pretrained=weights.pretrained,
            num_classes=0,
            **(weights.create_kwargs | _pool_kwargs(pooling)),
        )
    except Exception as err:  # timm/hub/file errors: all mean the weights could not be loaded
        raise WeightsError(
            f"Cannot build backbone {spec.text!r} from {weights.source}: {err}"
        ) from err
    model.eval()
    data_config = timm.data.resolve_model_data_config(model)
    if input_size:
        data_config["input_size"] = (3, input_size, input_size)
    if crop_pct:
        data_config["crop_pct"] = crop_pct
    if crop_mode:
        data_config["crop_mode"] = crop_mode
    if colour_constancy and colour_constancy != "none":  # absent: the digests of earlier runs hold
        data_config["colour_constancy"] = colour_constancy
    if pooling and pooling != "avg":  # timm's global_pool; recorded beside the preprocessing
        data_config["global_pool"] = pooling
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    width: Any = getattr(model, "head_hidden_size", None) or model.num_features  # catavgmax: 2x
    if stages and tuple(stages) != ("head",):  # recorded beside the preprocessing, as pooling
        from .stage_features import StageFeatures

        model = StageFeatures(model, stages, int(width), stage_pooling or "avg").eval()
        data_config["stages"] = list(stages)
        if stage_pooling and stage_pooling != "avg":  # absent: the digests of earlier runs hold
            data_config["stage_pooling"] = stage_pooling
        width = model.num_features
    return Backbone(spec, model, data_config, weights, architecture, int(width))


def _pool_kwargs(pooling: str | None) -> dict[str, Any]:
    return {"global_pool": pooling} if pooling and pooling != "avg" else {}


def _random_name(spec: BackboneSpec) -> str:
    if spec.form == "local-dir" and spec.path is not None:
        import json

        return str(json.loads((spec.path / "config.json").read_text())["architecture"])
    return spec.name.split(".")[0]


def _check_known_architecture(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:8] if len(arch) >= 3 else []
        raise ConfigError(
            f"Unknown backbone {arch!r}: timm has no such architecture"
            + (f" (close: {close})" if close else "")
            + f'. Use {SPEC_FORMS}; list names with `python -c "import timm; print(timm.list_models())"`.'
        )
