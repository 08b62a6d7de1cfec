"""Read a model folder written by save.py, verifying every file before anything is used.

Loading runs no code from the folder: JSON, safetensors arrays and the boosting libraries' own
model formats only. A missing, changed or truncated file, a folder that is not a model, or a model
from a newer schema is a :class:`ModelError` that says which file and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.numpy import load_file

from stage1_embed.common import folder_integrity_problem

from ..boosters import BoosterAdapter, Fitted, create_booster
from ..errors import ModelError
from ..features import FeatureGroup, create_feature_groups
from .calibration import Platt
from .save import KIND, MANIFEST, SCHEMA_VERSION


@dataclass
class SavedModel:
    folder: Path
    manifest: dict[str, Any]
    fold_groups: list[list[FeatureGroup]]  # per fold, fitted
    boosters: dict[str, tuple[BoosterAdapter, list[Fitted]]]  # per model, per fold
    platt: Platt

    @property
    def backbones(self) -> dict[str, dict[str, Any]]:
        return dict(self.manifest["backbones"])

    @property
    def columns(self) -> list[str]:
        return list(self.manifest["columns"])


def load_model(folder: Path) -> SavedModel:
    """Verify and load the model in ``folder``."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _verify_files(folder, manifest)
    fs = manifest["feature_set"]
    fold_groups = [
        read_group_state(
            create_feature_groups(fs["groups"], fs["backbones"], fs["reduction"], fs["n_components"], fs["seed"],
                                  fs.get("experts", ()), fs.get("expert_transform", "logit")),
            values, folder / "state" / f"fold{fold}.safetensors",
        )
        for fold, values in enumerate(manifest["group_state"])
    ]  # fmt: skip
    boosters = {}
    for entry in manifest["models"]:
        adapter = create_booster(entry["name"])
        boosters[entry["name"]] = (adapter, [_booster(adapter, folder / f) for f in entry["files"]])
    platt = manifest["blend"]["platt"]
    return SavedModel(
        folder, manifest, fold_groups, boosters, Platt(platt["slope"], platt["intercept"])
    )


def read_group_state(
    groups: list[FeatureGroup], values: list[dict[str, Any]], path: Path
) -> list[FeatureGroup]:
    """Restore fresh ``groups`` from what ``write_group_state`` saved."""
    if [g.group for g in groups] != [v["group"] for v in values]:
        raise ModelError(f"{path}: the saved feature groups do not match the expected ones.")
    arrays = _arrays(path)
    for index, (group, saved) in enumerate(zip(groups, values, strict=True)):
        prefix = f"{index}/"
        mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        group.set_state(saved["values"], mine)
    return groups


def read_manifest(folder: Path) -> dict[str, Any]:
    """``model.json``, checked to be a model of a schema this code reads."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ModelError(
            f"Model folder {folder} does not exist. Pass the OUT/stage2/model folder of a training run."
        )
    if not path.is_file():
        raise ModelError(
            f"{folder} is not a model folder (no {MANIFEST}). A training run writes its model to "
            "OUT/stage2/model/; pass that folder."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(
            f"{path} is damaged ({err}). Copy the model folder again or retrain."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ModelError(f"{path} is not a melanoma-stack model manifest.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ModelError(
            f"{folder} was saved by a newer melanoma-stack (model schema {version}); this one reads "
            f"schema {SCHEMA_VERSION}. Upgrade melanoma-stack to score with it."
        )
    if version < SCHEMA_VERSION:
        raise ModelError(
            f"{folder} has model schema {version}, no longer read; retrain to save a new one."
        )
    return manifest


def _verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    problem = folder_integrity_problem(folder, manifest, MANIFEST)
    if problem is not None:
        raise ModelError(
            f"{problem}: the model is truncated, damaged or edited. Copy the whole model folder "
            "again or retrain; a changed model would give wrong probabilities."
        )


def _arrays(path: Path) -> dict[str, Any]:
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path} cannot be read ({err}).") from None


def _booster(adapter: BoosterAdapter, path: Path) -> Fitted:
    try:
        return adapter.load(path)
    except Exception as err:  # the libraries raise their own error types on a bad file
        raise ModelError(f"{path} is not a readable {adapter.name} model ({err}).") from None
