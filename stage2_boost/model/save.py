"""Write the model folder of a training run, atomically.

Layout (``OUT/stage2/model/``):

    model.json                  schema version, run, metrics, config, backbones with the sha256
                                of their weights and their exact preprocessing, feature groups,
                                column order, models, blend and calibration, library versions,
                                and the sha256 and size of every other file
    state/fold<k>.safetensors   the feature groups' fitted arrays per fold (PCA, probes)
    boosters/<model>_fold<k>.*  the fold models in their libraries' own formats

Nothing in it is code: arrays are safetensors, boosters LightGBM text / XGBoost UBJSON, the rest
JSON. The folder is built beside the target and renamed into place, so a half-written model never
exists under the target's name.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from stage1_embed.common import atomic_folder, file_sha256, library_versions, seal

from ..boosters import BoosterAdapter
from ..cv import FoldMatrices
from ..features import FeatureGroup

MODEL_DIR = "model"
EXPERT_KEYS = ("backbone_spec", "architecture", "weights", "recipe", "normalisation", "n_folds",
               "settings_digest", "oof_auc")  # fmt: skip
MANIFEST = "model.json"
SCHEMA_VERSION = 1
KIND = "melanoma-stack model"
LIBRARIES = (
    "lightgbm",
    "xgboost",
    "scikit-learn",
    "numpy",
    "pandas",
    "safetensors",
    "melanoma-stack",
)


@dataclass(frozen=True)
class ModelContent:
    """Everything a run hands to :func:`save_model`."""

    run_id: str
    dataset: str
    feature_set: dict[str, Any]  # groups, backbones, reduction, n_components, seed, extra_sources
    columns: list[str]
    evaluation: Sequence[FoldMatrices]  # fitted feature groups per fold
    boosters: dict[
        str, tuple[BoosterAdapter, list[Any], dict[str, Any]]
    ]  # name -> (adapter, fits, info)
    platt: dict[str, float]
    backbones: dict[str, dict[str, Any]]  # slug -> stage 1 provenance of its embeddings
    metrics: dict[str, Any]
    config: dict[str, Any]
    experts: dict[str, tuple[dict[str, Any], list[Path]]] = field(default_factory=dict)
    # slug -> (the expert stage's provenance, its fine-tuned fold weight files)


def save_model(target: Path, content: ModelContent) -> Path:
    """Write the model folder to ``target`` (replacing an older one) and return it."""
    target = Path(target)
    with atomic_folder(target) as staging:
        manifest = _write_files(staging, content)
        (staging / MANIFEST).write_text(json.dumps(seal(manifest), indent=2, sort_keys=True))
    return target


def copy_model(source: Path, target: Path) -> Path:
    """A saved model folder copied to ``target`` (replacing an older one), atomically: the same
    files, so the same digests, without serialising the boosters again."""
    with atomic_folder(Path(target)) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
    return Path(target)


def _write_files(folder: Path, content: ModelContent) -> dict[str, Any]:
    (folder / "state").mkdir()
    (folder / "boosters").mkdir()
    group_values = [
        write_group_state(fold.groups, folder / "state" / f"fold{fold.fold}.safetensors")
        for fold in content.evaluation
    ]
    experts = {}
    for slug, (provenance, weight_files) in content.experts.items():
        (folder / "experts" / slug).mkdir(parents=True)
        copied: list[str] = []
        for path in weight_files:
            shutil.copy(path, folder / "experts" / slug / path.name)
            copied.append(f"experts/{slug}/{path.name}")
        experts[slug] = {**{k: provenance.get(k) for k in EXPERT_KEYS}, "files": copied}
    models = []
    for name, (adapter, fits, info) in content.boosters.items():
        booster_files: list[str] = []
        for index, fitted in enumerate(fits):
            relative = f"boosters/{name}_fold{index}{adapter.model_suffix}"
            adapter.save(fitted, folder / relative)
            booster_files.append(relative)
        models.append({"name": name, "files": booster_files, **info})
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "run_id": content.run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": content.dataset,
        "feature_set": content.feature_set,
        "columns": content.columns,
        "n_folds": len(content.evaluation),
        "group_state": group_values,
        "models": models,
        "blend": {
            "method": "mean log-odds of the models' fold-averaged probabilities",
            "platt": content.platt,
        },
        "backbones": content.backbones,
        "experts": experts,
        "metrics": content.metrics,
        "config": content.config,
        "libraries": library_versions(LIBRARIES),
        "files": {
            str(p.relative_to(folder)): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        },
    }


def write_group_state(groups: Sequence[FeatureGroup], path: Path) -> list[dict[str, Any]]:
    """Save fitted groups' arrays to ``path`` (safetensors); return their JSON part."""
    arrays: dict[str, np.ndarray] = {}
    values = []
    for index, group in enumerate(groups):
        group_json, group_arrays = group.get_state()
        values.append({"group": group.group, "values": group_json})
        arrays.update({f"{index}/{k}": np.ascontiguousarray(v) for k, v in group_arrays.items()})
    save_file(arrays, str(path))
    return values
