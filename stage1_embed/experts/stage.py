"""All folds of every expert: the folds stage 2 scores with, caching, one fold per process, assembly.

Outputs in ``OUT/experts/``:

    <slug>.parquet              image_name, split, fold, expert (the malignancy probability: out of
                                fold for training rows, the mean of the fold models for test rows)
                                with provenance (base weights sha256, recipe, seed, folds key,
                                epochs, best epoch and inner AUCs per fold, device)
    <slug>/fold<k>.safetensors  the fine-tuned fold models (a saved stage 2 model includes them)
    <slug>/.work/fold<k>/       checkpoints while a fold trains (removed at assembly)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from filelock import FileLock
from safetensors.torch import save_file

from ..backbones import Backbone, create_backbone, parse_backbone_spec
from ..colour import stored_orders
from ..common import IMAGE_LIBRARIES, atomic_path, code_digest, library_versions
from ..errors import ConfigError, DataError
from ..folds import load_or_make_eval_folds, read_same_lesion_links
from ..schema import (
    METADATA_KEY,
    USABLE_STATUSES,
    extra_features_dir,
    read_manifest,
    read_provenance,
)
from ..sources import ImageRef, ImageSource, create_source
from .fold import Classifier, predict, train_fold
from .images import ImageStore
from .recipe import Recipe

logger = logging.getLogger(__name__)
EXPERTS_DIR = "experts"
SCHEMA = 1


@dataclass(frozen=True)
class ExpertConfig:
    data_dir: Path
    out_dir: Path  # stage 1's output folder (manifest.parquet)
    specs: tuple[str, ...]
    recipe: Recipe
    device: str = "cpu"
    n_folds: int = 5  # stage 2's --folds and --seed: the experts use stage 2's evaluation folds
    seed: int = 42
    merge_duplicates: bool = (
        True  # stage 2's default: patients sharing an identical image share a fold
    )
    folds: tuple[int, ...] | None = None  # only these folds (one per process or GPU); None: all
    extra_data: tuple[Path, ...] = ()
    images_dir: Path | None = None
    image_format: str = "auto"
    weights_dir: Path | None = None
    workers: int = 0
    max_memory_gb: float = 8.0
    progress: bool = True


@dataclass
class ExpertResult:
    slug: str
    status: str  # computed | cached | waiting-for-folds
    seconds: float
    oof_auc: float | None = None
    folds: dict[int, dict[str, Any]] = field(default_factory=dict)


def expert_path(out_dir: Path, slug: str) -> Path:
    return Path(out_dir) / EXPERTS_DIR / f"{slug}.parquet"


def run_experts(config: ExpertConfig) -> list[ExpertResult]:
    rows = _rows(config)
    primary = rows[~rows["extra"]]
    train = primary[primary["split"] == "train"].reset_index(drop=True)
    links = read_same_lesion_links(config.out_dir, train) if config.merge_duplicates else []
    folds, folds_key = load_or_make_eval_folds(train, config.n_folds, config.seed,
                                               Path(config.out_dir) / "stage2", config.merge_duplicates, links)  # fmt: skip
    fold_of = dict(zip(train["image_name"], folds.tolist(), strict=True))
    rows["fold"] = [fold_of.get(n, -1) if s == "train" and not x else -1
                    for n, s, x in rows[["image_name", "split", "extra"]].itertuples(index=False)]  # fmt: skip
    device = torch.device(config.device)
    store: ImageStore | None = None
    results = []
    for text in config.specs:
        spec = parse_backbone_spec(text)
        backbone = create_backbone(spec, config.weights_dir)
        settings = _settings(backbone, config, folds_key, rows)
        final = expert_path(config.out_dir, spec.slug)
        if (
            final.is_file()
            and read_provenance(final).get("settings_digest") == settings["settings_digest"]
        ):
            logger.info("%s: expert probabilities are up to date, skipping", spec.slug)
            results.append(ExpertResult(spec.slug, "cached", 0.0))
            continue
        if store is None:
            store = ImageStore(
                rows["item"].tolist(),
                config.recipe.image_size,
                config.max_memory_gb,
                config.progress,
            )
        started = time.perf_counter()
        work = final.parent / spec.slug / ".work"
        for fold in config.folds if config.folds is not None else range(config.n_folds):
            _run_fold(backbone, store, rows, fold, config, device, work / f"fold{fold}", settings)
        result = ExpertResult(spec.slug, "waiting-for-folds", time.perf_counter() - started)
        with FileLock(str(work) + ".lock"):
            if all((work / f"fold{k}" / "done.json").is_file() for k in range(config.n_folds)):
                result.status, result.oof_auc, result.folds = (
                    "computed",
                    *_assemble(final, work, rows, settings),
                )
        results.append(result)
    return results


def _rows(config: ExpertConfig) -> pd.DataFrame:
    """Usable rows of the primary data and the extra sets, each with its (source, ref)."""
    frames = []
    for folder, data_dir, images, fmt, extra in [
        (Path(config.out_dir), config.data_dir, config.images_dir, config.image_format, False),
        *[(extra_features_dir(config.out_dir, e), e, _extra_images(config.out_dir, e), "auto", True)
          for e in config.extra_data],
    ]:  # fmt: skip
        manifest, provenance = read_manifest(folder)
        usable = manifest[manifest["read_status"].isin(USABLE_STATUSES)]
        if extra:
            usable = usable[usable["split"] == "train"]
        source = create_source(data_dir, images, fmt, channel_orders=stored_orders(provenance))
        refs = source.index({s: set(g["image_name"]) for s, g in usable.groupby("split")})
        missing = [
            f"{s}/{n}"
            for s, n in zip(usable["split"], usable["image_name"], strict=True)
            if (s, n) not in refs
        ]
        if missing:
            raise DataError(f"{len(missing)} image(s) of {folder}/manifest.parquet are not in {source.describe()}, e.g. "
                            f"{missing[:5]}. Pass the --data (and --images) that stage 1 used (./run_all.sh, python -m stage1_embed.experts).")  # fmt: skip
        items: list[tuple[ImageSource, ImageRef]] = [(source, refs[(s, n)]) for s, n in
                                                     zip(usable["split"], usable["image_name"], strict=True)]  # fmt: skip
        frames.append(
            usable[["image_name", "patient_id", "split", "target", "content_sha256"]].assign(
                extra=extra, item=items
            )
        )
    return pd.concat(frames, ignore_index=True)


def _extra_images(out_dir: Path, extra: Path) -> Path | None:
    saved = extra_features_dir(out_dir, extra) / "stage1_config.json"
    images = json.loads(saved.read_text()).get("images_dir") if saved.is_file() else None
    return Path(images) if images else None


def _settings(
    backbone: Backbone, config: ExpertConfig, folds_key: str, rows: pd.DataFrame
) -> dict[str, Any]:
    relevant = {
        "schema": SCHEMA, "backbone_spec": backbone.spec.text, "architecture": backbone.architecture,
        "weights": {"source": backbone.weights.source, "sha256": backbone.weights.sha256},
        "recipe": config.recipe.to_json(), "schedule": "timm CosineLRScheduler", "folds_key": folds_key, "n_folds": config.n_folds,
        "rows": hashlib.sha256("\n".join(rows["split"] + "/" + rows["image_name"]).encode()).hexdigest(),
        # one policy with stage 1's embeddings: an edit to the code or a library upgrade retrains
        "code": code_digest("stage1_embed"), "libraries": library_versions((*IMAGE_LIBRARIES, "scikit-learn")),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return {**relevant, "settings_digest": digest, "device": config.device,
            "normalisation": {"mean": list(backbone.data_config["mean"]), "std": list(backbone.data_config["std"])}}  # fmt: skip


def _run_fold(
    backbone: Backbone, store: ImageStore, rows: pd.DataFrame, fold: int, config: ExpertConfig,
    device: torch.device, folder: Path, settings: dict[str, Any],
) -> None:  # fmt: skip
    done = folder / "done.json"
    if (
        done.is_file()
        and json.loads(done.read_text()).get("settings_digest") == settings["settings_digest"]
    ):
        return
    if folder.is_dir() and (folder / "settings.json").is_file() and json.loads(
            (folder / "settings.json").read_text()).get("settings_digest") != settings["settings_digest"]:  # fmt: skip
        shutil.rmtree(folder)  # checkpoints of other settings: start this fold over
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(
        json.dumps({"settings_digest": settings["settings_digest"]})
    )
    fit_part, stop_part, valid, test = _fold_rows(rows, fold, config)
    target = rows["target"].to_numpy(dtype=float, na_value=0.0)
    torch.manual_seed(config.recipe.seed * 7_919 + fold)  # the new head's initial weights
    model = _classifier(backbone)
    trained, outcome = train_fold(model, store, fit_part, target[fit_part], stop_part, target[stop_part],
                                  config.recipe, device, folder, fold, config.workers)  # fmt: skip
    scored = np.concatenate([valid, test])
    probs = predict(trained, store, scored, device, config.recipe.tta, config.recipe)
    table = pd.DataFrame({"row": scored, "expert": probs})
    with atomic_path(folder / "pred.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in trained.state_dict().items()}, str(tmp)
        )
    valid_auc = _auc(target[valid], probs[: len(valid)])
    done.write_text(json.dumps({"settings_digest": settings["settings_digest"], "best_epoch": outcome.best_epoch + 1,
                                "inner_aucs": outcome.inner_aucs, "losses": outcome.losses, "fold_auc": valid_auc}))  # fmt: skip
    logger.info(
        "fold %d done: best epoch %d, out-of-fold AUC %.4f", fold, outcome.best_epoch + 1, valid_auc
    )


def _fold_rows(rows: pd.DataFrame, fold: int, config: ExpertConfig) -> tuple[np.ndarray, ...]:
    """Training part (+ extra rows) split by patient into fit / epoch-choosing parts; the fold's
    held-out rows; the test rows. Extra rows only ever train."""
    from sklearn.model_selection import StratifiedGroupKFold

    primary_train = (~rows["extra"]) & (rows["split"] == "train")
    part = np.flatnonzero(primary_train & (rows["fold"] != fold))
    valid = np.flatnonzero(primary_train & (rows["fold"] == fold))
    test = np.flatnonzero((~rows["extra"]) & (rows["split"] == "test"))
    splitter = StratifiedGroupKFold(
        round(1 / config.recipe.inner_fraction), shuffle=True, random_state=config.seed + fold
    )
    labels = rows["target"].to_numpy(dtype=float, na_value=0.0)[part].astype(int)
    fit_i, stop_i = next(splitter.split(part, labels, rows["patient_id"].to_numpy()[part]))
    fit = np.concatenate([part[fit_i], np.flatnonzero(rows["extra"])])
    return fit, part[stop_i], valid, test


def _classifier(backbone: Backbone) -> Classifier:
    import copy

    return Classifier(copy.deepcopy(backbone.model), backbone.num_features, backbone.data_config["mean"],
                      backbone.data_config["std"])  # fmt: skip


def _assemble(
    final: Path, work: Path, rows: pd.DataFrame, settings: dict[str, Any]
) -> tuple[float, dict[int, dict[str, Any]]]:
    n_folds = settings["n_folds"]
    oof = np.full(len(rows), np.nan)
    test_sum, test_rows = None, None
    folds_info = {}
    for k in range(n_folds):
        pred = pd.read_parquet(work / f"fold{k}" / "pred.parquet")
        is_test = rows["split"].to_numpy()[pred["row"]] == "test"
        oof[pred["row"].to_numpy()[~is_test]] = pred["expert"].to_numpy()[~is_test]
        test_rows = pred["row"].to_numpy()[is_test]
        test_sum = pred["expert"].to_numpy()[is_test] + (0 if test_sum is None else test_sum)
        folds_info[k] = json.loads((work / f"fold{k}" / "done.json").read_text())
        target_dir = final.parent / final.stem
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / f"fold{k}" / "model.safetensors", target_dir / f"fold{k}.safetensors")
    if test_rows is not None and test_sum is not None and len(test_rows):
        oof[test_rows] = test_sum / n_folds
    keep = ~np.isnan(oof)
    primary_train = (~rows["extra"].to_numpy()) & (rows["split"].to_numpy() == "train")
    oof_auc = _auc(
        rows["target"].to_numpy(dtype=float, na_value=0.0)[primary_train], oof[primary_train]
    )
    table = pa.table({"image_name": rows["image_name"].to_numpy()[keep], "split": rows["split"].to_numpy()[keep],
                      "fold": rows["fold"].to_numpy()[keep].astype(np.int16), "expert": oof[keep].astype(np.float32)})  # fmt: skip
    provenance = {**settings, "oof_auc": oof_auc, "folds": folds_info, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "epochs_run": settings["recipe"]["epochs"]}  # fmt: skip
    table = table.replace_schema_metadata(
        {METADATA_KEY: json.dumps({"schema_version": 1, **provenance}, default=str).encode()}
    )
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    shutil.rmtree(work, ignore_errors=True)
    return oof_auc, folds_info


def _auc(target: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(target)) < 2:
        raise ConfigError(
            "A fold has a single class; use fewer folds (python -m stage1_embed.experts --folds)."
        )
    return float(roc_auc_score(target, score))
