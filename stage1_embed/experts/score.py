"""Expert probabilities for new images, from the fine-tuned fold models in a saved model folder.

Stage 1 with ``--model`` calls this after the embeddings: every usable image of the scored data
gets the mean probability of the expert's fold models (with the recipe's TTA views), written to
``OUT/experts/<slug>.parquet`` for stage 2's ``predict``. The weight files are safetensors, checked
against the sha256 the model's manifest records before they are loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from ..backbones import create_backbone, parse_backbone_spec
from ..colour import stored_orders
from ..common import atomic_path, file_sha256
from ..errors import WeightsError
from ..schema import METADATA_KEY, read_manifest
from ..sources import create_source
from .fold import Classifier, predict
from .images import ImageStore
from .recipe import Recipe
from .stage import expert_path

logger = logging.getLogger(__name__)


def score_model_experts(
    model_dir: Path, out_dir: Path, data_dir: Path, images_dir: Path | None, image_format: str,
    device: str, weights_dir: Path | None = None, progress: bool = True,
) -> list[str]:  # fmt: skip
    """Write each of the model's experts' probabilities for the features in ``out_dir``."""
    manifest_json = json.loads((Path(model_dir) / "model.json").read_text())
    experts: dict[str, dict[str, Any]] = manifest_json.get("experts") or {}
    if not experts:
        return []
    manifest, provenance = read_manifest(out_dir)
    usable = manifest[manifest["read_status"] == "ok"]  # images that were read
    source = create_source(data_dir, images_dir, image_format,
                           channel_orders=stored_orders(provenance))  # fmt: skip
    refs = source.index({s: set(g["image_name"]) for s, g in usable.groupby("split")})
    keys = [
        (s, n) for s, n in zip(usable["split"], usable["image_name"], strict=True) if (s, n) in refs
    ]
    for slug, expert in experts.items():
        settings: dict[str, Any] = dict(expert["recipe"])
        settings["tta"] = tuple(settings.get("tta") or ())
        recipe = Recipe(**settings)
        store = ImageStore([(source, refs[k]) for k in keys], recipe.image_size, progress=progress)
        spec = parse_backbone_spec(expert["backbone_spec"])
        base = create_backbone(
            spec, weights_dir, random_init=True
        )  # architecture only: weights follow
        probs = []
        for relative in expert["files"]:
            path = Path(model_dir) / relative
            expected = manifest_json["files"][relative]["sha256"]
            if file_sha256(path) != expected:
                raise WeightsError(
                    f"{path} differs from the model's manifest (sha256): copy the model again."
                )
            model = Classifier(base.model, base.num_features, expert["normalisation"]["mean"],
                               expert["normalisation"]["std"])  # fmt: skip
            model.load_state_dict(load_file(str(path)))
            model = model.to(torch.device(device)).to(memory_format=torch.channels_last)
            probs.append(
                predict(
                    model, store, np.arange(len(keys)), torch.device(device), recipe.tta, recipe
                )
            )
        mean = np.mean(probs, axis=0)
        table = pa.table({"image_name": [n for _, n in keys], "split": [s for s, _ in keys],
                          "fold": np.full(len(keys), -1, np.int16), "expert": mean.astype(np.float32)})  # fmt: skip
        provenance = {"schema_version": 1, "scored_with_model": str(model_dir), "settings_digest": expert.get("settings_digest"),
                      "backbone_spec": expert["backbone_spec"], "recipe": expert["recipe"], "device": device}  # fmt: skip
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(provenance).encode()})
        target = expert_path(out_dir, slug)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        logger.info(
            "%s: expert probabilities for %d image(s) from %d fold model(s)",
            slug,
            len(keys),
            len(probs),
        )
    return list(experts)
