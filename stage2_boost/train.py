"""Stage 2 end to end: features -> tuned LightGBM/XGBoost -> honest OOF AUC -> outputs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from scipy.special import expit
from sklearn.metrics import brier_score_loss

from stage1_embed.common import usable_cores
from stage1_embed.folds import (
    EVAL_SEED_OFFSET,
    FOLDS_FILE,
    fold_groups,
    load_or_make_eval_folds,
    load_or_make_folds,
    read_same_lesion_links,
)

from .boosters import BoosterAdapter, create_booster, resolve_device
from .cache import (
    CACHE_DIR,
    ContentCache,
    cached_folds,
    cached_refit,
    content_key,
    data_digest,
    environment_digest,
)
from .chance import chance_text
from .compare import ablation_table, short_delta, versus_earlier
from .config import DEFAULT_GROUPS, IMAGE_GROUPS, Stage2Config
from .cv import CVResult, FoldMatrices, cross_validate, oof_folds, oof_rows, prepare_folds
from .data import StageData, load_stage_data
from .errors import ConfigError, ContractError, OutputError
from .evidence import Evidence, images_digest, run_folder, write_evidence
from .features import create_feature_groups
from .metrics import auc, metric_summary
from .model.calibration import (
    Platt,
    blend_logit,
    cross_fitted,
    expected_calibration_error,
)
from .model.save import MODEL_DIR, ModelContent, copy_model, save_model
from .outputs import RUNS_FILE, append_run, write_metrics, write_parquet, write_submission
from .tune import (
    best_choice,
    make_objective,
    mask_url,
    open_storage,
    open_study,
    run_study,
    study_name,
)

logger = logging.getLogger(__name__)
MIN_COMPONENTS = 4  # the smallest automatic PCA size per backbone


@dataclass
class ModelResult:
    name: str
    study: str
    params: dict[str, Any]
    tuning_auc: float | None
    n_trials: int
    cv: CVResult
    n_rounds: int
    oof_auc: float = float("nan")
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    choice: str = "best trial"  # why these parameters (tune.best_choice)


@dataclass
class RunResult:
    run_id: str
    metrics: dict[str, Any]
    out_dir: Path
    models: list[ModelResult] = field(default_factory=list)


def run_training(config: Stage2Config) -> RunResult:
    """Train under a lock on the stage 2 folder, so two runs never interleave their outputs."""
    out = config.stage2_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"Cannot create {out}: {err.strerror}. Choose another --out.") from err
    lock = FileLock(str(out / ".stage2.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise OutputError(
            f"Another stage 2 run is writing to {out}. Wait for it, or use another --out; several "
            "workers can share one study through --storage with a database URL."
        ) from err
    try:
        return _train_locked(config, out)
    finally:
        lock.release()


def resolve_groups(config: Stage2Config, data: StageData) -> tuple[str, ...]:
    """The feature groups this run uses; image groups need embeddings."""
    if config.feature_groups is None:
        groups = (
            DEFAULT_GROUPS
            if data.embeddings
            else tuple(g for g in DEFAULT_GROUPS if g not in IMAGE_GROUPS)
        )
        return (*groups, "expert") if data.experts else groups
    if "expert" in config.feature_groups and not data.experts:
        raise ConfigError("Feature group 'expert' needs --experts (the expert stage's outputs).")
    if data.experts and "expert" not in config.feature_groups:
        raise ConfigError("--experts names experts to stack, but the feature groups leave out "
                          "'expert': add it to them, or drop --experts.")  # fmt: skip
    if set(config.feature_groups) & IMAGE_GROUPS and not data.embeddings:
        raise ConfigError(
            f"Feature groups {'/'.join(sorted(IMAGE_GROUPS))} need embeddings, but none were found in "
            f"{config.features_dir}/embeddings. Run stage 1 with backbones, or drop those groups."
        )
    if "patient-scores" in config.feature_groups and not {"probe", "neighbours", "expert"} & set(
        config.feature_groups
    ):
        raise ConfigError("Feature group 'patient-scores' ranks the image scores of the groups "
                          "probe, neighbours or expert: add one of them.")  # fmt: skip
    return config.feature_groups


@dataclass
class PreparedRun:
    """What a run's features are built from (data, groups, folds) and how to build them: each
    fold split's matrices come from the content-addressed cache when they were built before."""

    config: Stage2Config
    data: StageData
    groups: tuple[str, ...]
    backbones: list[str]
    experts: list[str]
    train_rows: np.ndarray
    extra_rows: np.ndarray
    test_rows: np.ndarray
    folds: np.ndarray
    eval_folds: np.ndarray
    eval_key: str
    n_components: int
    n_pos_all: int
    cache: ContentCache
    rows_digest: str  # every value of every row, embedding and expert probability
    key_parts: dict[str, Any]

    @property
    def eval_seed(self) -> int:
        return self.config.seed + EVAL_SEED_OFFSET

    def make_groups(self, names: tuple[str, ...] | None = None) -> list:
        return create_feature_groups(names or self.groups, self.backbones, self.config.reduction,
                                     self.n_components, self.config.seed, self.experts,
                                     self.config.expert_transform)  # fmt: skip

    def fold_matrices(
        self, split: np.ndarray, seed: int, test: np.ndarray | None,
        names: tuple[str, ...] | None = None,
    ) -> list[FoldMatrices]:  # fmt: skip
        names = names or self.groups
        key = content_key("folds", self.rows_digest, self.key_parts | {"groups": names},
                          self.train_rows, split, seed, test, self.extra_rows)  # fmt: skip
        return cached_folds(self.cache, key, lambda: prepare_folds(
            self.data, self.train_rows, split, lambda: self.make_groups(names), seed, test,
            self.extra_rows, _fold_workers(self.config)), lambda: self.make_groups(names),
            self.data.target)  # fmt: skip

    def evaluation(
        self, names: tuple[str, ...] | None = None, test: bool = True
    ) -> list[FoldMatrices]:
        """The evaluation folds' matrices (with the test rows when ``test``)."""
        return self.fold_matrices(self.eval_folds, self.eval_seed,
                                  self.test_rows if test else None, names)  # fmt: skip


def prepare_run(config: Stage2Config, out: Path) -> PreparedRun:
    """Load stage 1's outputs, choose the groups, and make (or reuse) both fold splits."""
    data = load_stage_data(config.features_dir, list(config.backbones) if config.backbones else None,
                           config.extra_features_dirs, config.experts)  # fmt: skip
    groups = resolve_groups(config, data)
    if not set(groups) & IMAGE_GROUPS:  # a metadata-only run neither uses nor needs embeddings
        data.embeddings.clear()
        data.embedding_provenance.clear()
    backbones = sorted(data.embeddings)
    (train_rows, extra_rows), test_rows = data.train_index(), data.split_index("test")
    train = data.frame.iloc[train_rows]
    n_pos = int(train["target"].sum())
    n_pos_all = n_pos + int(data.target[extra_rows].sum())
    merge, links = config.merge_duplicates, _links(config, train)
    folds, _ = load_or_make_folds(train, config.n_folds, config.seed, out / FOLDS_FILE, merge,
                                  links)  # fmt: skip
    eval_folds, eval_key = load_or_make_eval_folds(train, config.n_folds, config.seed, out, merge,
                                                   links)  # fmt: skip
    logger.info("%d train images (%d malignant, %d patients), %d test; features %s; backbones %s",
                len(train), n_pos, train["patient_id"].nunique(), len(test_rows),
                ",".join(groups), ",".join(backbones) or "none")  # fmt: skip
    if len(extra_rows):
        logger.info("extra training data: %d images (%d malignant) from %s; they only ever train",
                    len(extra_rows), n_pos_all - n_pos, ", ".join(data.extra_sources))  # fmt: skip
    n_components = config.n_components or auto_components(n_pos_all, len(backbones))
    experts = sorted(data.experts)
    _check_expert_folds(data, eval_key, config)
    key_parts = {"groups": groups, "backbones": backbones, "reduction": config.reduction,
                 "n_components": n_components, "experts": experts,
                 "expert_transform": config.expert_transform}  # fmt: skip
    return PreparedRun(
        config, data, groups, backbones, experts, train_rows, extra_rows, test_rows, folds,
        eval_folds, eval_key, n_components, n_pos_all,
        ContentCache(None if config.no_cache else out / CACHE_DIR),
        data_digest(data.frame, data.embeddings, data.experts), key_parts,
    )  # fmt: skip


def _train_locked(config: Stage2Config, out: Path) -> RunResult:
    started = time.perf_counter()
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    run = prepare_run(config, out)
    data, cache = run.data, run.cache
    tuning = run.fold_matrices(run.folds, config.seed, None)
    evaluation = run.evaluation()
    feature_set = _feature_set(run, evaluation[0].X_fit.columns)
    advice = overfitting_advice(feature_set["n_features"], run.n_pos_all, run.n_components,
                                run.groups)  # fmt: skip
    if advice:
        logger.warning("%s", advice)
    # the default SQLite file is this run's alone (the folder is locked): no heartbeats needed
    storage = open_storage(config.storage_url, config.heartbeat_grace, config.storage is not None)
    models = [
        _tune_and_evaluate(name, config, data, tuning, evaluation, storage, feature_set, cache)
        for name in config.models
    ]
    blend = _blend(data, models, evaluation)
    metrics = _metrics(config, data, models, evaluation, feature_set, run_id, blend)
    metrics["extra"] = _extra_summary(data, run.extra_rows)
    metrics["experts"] = {
        slug: {k: p.get(k) for k in ("oof_auc", "backbone_spec", "recipe", "device", "folds_key")}
        | {"best_epochs": [f.get("best_epoch") for f in (p.get("folds") or {}).values()]}
        for slug, p in data.expert_provenance.items()
    }
    metrics["ablation"] = ablate(run, [(m.name, m.params, m.n_rounds) for m in models],
                                 blend.oof_logit, evaluation, metrics["oof_auc_ci95"])  # fmt: skip
    metrics["model"] = _save_models(
        config, out, data, models, evaluation, feature_set, metrics, blend
    )
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    _write_outputs(out, data, models, evaluation, metrics, config, blend, cache)
    return RunResult(run_id, metrics, out, models)


def ablate(
    run: PreparedRun, models: Sequence[tuple[str, dict[str, Any], int]], full: np.ndarray,
    evaluation: list[FoldMatrices], auc_ci95: Sequence[float],
) -> dict[str, Any]:  # fmt: skip
    """The ablation table (compare.ablation_table) of the chosen models (name, parameters,
    rounds): each group set of :func:`_ablations` left out and the models refitted on the same
    evaluation folds, one progress line per refit."""
    config = run.config
    sets = _ablations(config, run.groups)
    without = {}
    for i, left_out in enumerate(sets, 1):
        started = time.perf_counter()
        names = tuple(g for g in run.groups if g not in left_out)
        folds = run.evaluation(names, test=False)
        without["+".join(left_out)] = blend_logit(*[
            cached_refit(run.cache, _adapter(config, name, folds), folds, params, n_rounds).oof
            for name, params, n_rounds in models
        ])  # fmt: skip
        logger.info("ablation %d/%d: without %s refitted (%.1f s)", i, len(sets),
                    "+".join(left_out), time.perf_counter() - started)  # fmt: skip
    return ablation_table(
        without, full, run.data.target[oof_rows(evaluation)], _oof_patients(run.data, evaluation),
        config.n_bootstrap, config.seed, chance_text(auc_ci95),
    )  # fmt: skip


def _ablations(config: Stage2Config, groups: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The group sets --ablate leaves out: each group, then as the ISIC 2024 organisers' ablation
    did, all image features and all patient context together (groups such as embedding and probe
    carry the same signal, so either alone looks worthless). Without --ablate: acquisition only."""
    if not config.ablate:
        return [("acquisition",)] if "acquisition" in groups and len(groups) > 1 else []
    sets: list[tuple[str, ...]] = [(g,) for g in groups] if len(groups) > 1 else []
    for joint in (IMAGE_GROUPS, {"patient", "ugly-duckling", "patient-context", "patient-scores"}):
        chosen = tuple(g for g in groups if g in joint)
        if 1 < len(chosen) < len(groups):
            sets.append(chosen)
    return sets


def _adapter(config: Stage2Config, name: str, folds: list[FoldMatrices]) -> BoosterAdapter:
    return create_booster(name, seed=config.seed, max_rounds=config.max_rounds,
                          device=resolve_device(config.device), threads=config.threads,
                          early_stopping=config.early_stopping, n_rows=len(folds[0].fit_rows),
                          n_features=folds[0].X_fit.shape[1], n_folds=config.n_folds,
                          search_bins=config.search_bins)  # fmt: skip


def _regrouped(data: StageData, config: Stage2Config) -> int:
    """Training images whose fold group is not their own patient (images of one lesion merged)."""
    train = data.frame.iloc[data.train_index()[0]]
    groups = fold_groups(train, config.merge_duplicates, _links(config, train))
    return int((groups != train["patient_id"].astype(str)).sum())


def _links(config: Stage2Config, train: pd.DataFrame) -> list[tuple[str, str]]:
    """The data check's same-lesion pairs (stage 1's check command), when merging."""
    return read_same_lesion_links(config.features_dir, train) if config.merge_duplicates else []


def _oof_patients(data: StageData, evaluation: list[FoldMatrices]) -> np.ndarray:
    return data.frame["patient_id"].to_numpy()[oof_rows(evaluation)]


def _fold_workers(config: Stage2Config) -> int:
    """How many folds' features are built at once (as boosters.plan_threads fits them)."""
    return min(config.threads or usable_cores(), config.n_folds)


def _check_expert_folds(data: StageData, eval_key: str, config: Stage2Config) -> None:
    """Stacked expert probabilities are out of fold only on the folds they were trained in."""
    for slug, provenance in data.expert_provenance.items():
        if provenance.get("folds_key") != eval_key:
            raise ContractError(
                f"Expert {slug} was fine-tuned in other folds than this run evaluates with (other "
                f"images, folds or seed): its probabilities would leak labels into the OOF AUC. "
                f"Rerun the expert stage: python -m stage1_embed.experts --folds {config.n_folds} "
                f"--seed {config.seed} (./run_all.sh --experts uses the defaults of both)."
            )


def _extra_summary(data: StageData, extra_rows: np.ndarray) -> dict[str, Any]:
    """Extra training rows per source. They are in every fold's training part and in no
    validation fold, so they have no out-of-fold prediction and no AUC of their own."""
    sources = data.frame["source"].to_numpy()[extra_rows]
    target = data.target[extra_rows]
    per_source = {}
    for name in data.extra_sources:
        mask = sources == name
        per_source[name] = {"n_rows": int(mask.sum()), "n_pos": int(target[mask].sum())}
    return {
        "n_rows": len(extra_rows),
        "n_pos": int(target.sum()),
        "sources": per_source,
        "oof_auc": None,
        "note": "extra rows only train (never validated), so they have no out-of-fold AUC",
    }


_BACKBONE_PROVENANCE = ("backbone_spec", "slug", "architecture", "num_features", "weights",
                        "pretrained", "preprocessing", "tta_views", "precision", "engine",
                        "chunk_size", "settings_digest", "channel_order")  # fmt: skip


def _backbone_provenance(data: StageData) -> dict[str, dict[str, Any]]:
    """What each backbone's embeddings were made with, for metrics.json and the saved model."""
    return {slug: {k: p.get(k) for k in _BACKBONE_PROVENANCE}
            for slug, p in data.embedding_provenance.items()}  # fmt: skip


def _save_models(
    config: Stage2Config, out: Path, data: StageData, models: list[ModelResult],
    evaluation: list[FoldMatrices], feature_set: dict[str, Any], metrics: dict[str, Any],
    blended: BlendResult,
) -> dict[str, Any]:  # fmt: skip
    """Write OUT/stage2/model (and --save-model DIR): everything needed to score new images."""
    summary = {k: metrics[k] for k in ("run_id", "dataset", "oof_auc", "oof_auc_ci95", "n_train",
                                       "n_pos", "calibration", "extra")}  # fmt: skip
    content = ModelContent(
        run_id=metrics["run_id"], dataset=data.dataset, feature_set=feature_set,
        columns=list(evaluation[0].X_fit.columns), evaluation=evaluation,
        boosters={m.name: (create_booster(m.name), m.cv.models,
                           {"params": m.params, "n_rounds": m.n_rounds, "study": m.study}) for m in models},
        platt={"slope": blended.platt.slope, "intercept": blended.platt.intercept},
        backbones=_backbone_provenance(data),
        metrics=summary, config=config.to_json(),
        experts={slug: (p, sorted((Path(config.features_dir) / "experts" / slug).glob("fold*.safetensors")))
                 for slug, p in data.expert_provenance.items()},
    )  # fmt: skip
    # every run's model stays under OUT/runs/<run_id>/model; OUT/model is the newest run's
    kept = save_model(run_folder(out, metrics["run_id"]) / MODEL_DIR, content)
    folders = [out / MODEL_DIR, kept, *([config.save_model] if config.save_model else [])]
    for folder in folders:
        if folder != kept:
            copy_model(kept, folder)
    logger.info("model saved to %s", ", ".join(map(str, folders)))
    return {"folders": [str(f) for f in folders], "run_id": metrics["run_id"]}


def overfitting_advice(
    n_features: int, n_pos: int, n_components: int, groups: Sequence[str]
) -> str | None:
    """Many features against few malignant images is where stacking overfits (seen on 27): the
    warning, with only suggestions that change something this run did (None: no warning)."""
    if n_features <= n_pos:
        return None
    text = (f"{n_features} features but only {n_pos} malignant training images: expect the "
            "tuning AUC to be optimistic and image features to overfit.")  # fmt: skip
    tips = [f"--components {MIN_COMPONENTS}"] if n_components > MIN_COMPONENTS else []
    fewer = [g for g in groups if g in ("metadata", "patient", "ugly-duckling")]
    if fewer and len(fewer) < len(groups):
        tips.append(f"--groups {','.join(fewer)} (./run_all.sh --features {','.join(fewer)})")
    if tips:
        text += (f" Consider python -m stage2_boost train {' or '.join(tips)}, and judge the "
                 "change with python -m stage2_boost compare.")  # fmt: skip
    return text


def auto_components(n_pos: int, n_backbones: int) -> int:
    """PCA size per backbone when not given: about three malignant images per image feature,
    between 4 and 32 (32 on the full ISIC data or HAM10000, 7 on the 67-positive demo)."""
    return int(np.clip(n_pos // (3 * max(1, n_backbones)), MIN_COMPONENTS, 32))


def _feature_set(run: PreparedRun, columns: Any) -> dict[str, Any]:
    config = run.config
    # the study is tied to the data it tunes on: other data, other study (same data: shared)
    digest = data_digest(run.rows_digest, run.key_parts, run.train_rows, run.folds, run.extra_rows)
    return {"groups": list(run.groups), "backbones": run.backbones, "reduction": config.reduction,
            "n_components": run.n_components, "n_features": len(columns),
            "folds": config.n_folds, "seed": config.seed, "extra_sources": run.data.extra_sources,
            "experts": run.experts, "expert_transform": config.expert_transform,
            "data_digest": digest[:12]}  # fmt: skip


def _feature_key(feature_set: dict[str, Any]) -> str:
    images = f"{','.join(feature_set['backbones'])}.{feature_set['reduction']}{feature_set['n_components']}"
    groups = "+".join(feature_set["groups"])
    has_images = bool(IMAGE_GROUPS & set(feature_set["groups"]))
    extra = "".join(f".x-{name}" for name in feature_set.get("extra_sources", []))
    extra += "".join(f".e-{name}" for name in feature_set.get("experts", []))
    data = f".d{feature_set['data_digest']}" if "data_digest" in feature_set else ""
    return f"{groups}{'.' + images if has_images else ''}{extra}.f{feature_set['folds']}s{feature_set['seed']}{data}"


def _tune_and_evaluate(
    name: str,
    config: Stage2Config,
    data: StageData,
    tuning: list[FoldMatrices],
    evaluation: list[FoldMatrices],
    storage: Any,
    feature_set: dict[str, Any],
    cache: ContentCache,
) -> ModelResult:
    adapter = _adapter(config, name, tuning)
    full_name = study_name(data.dataset, name, _feature_key(feature_set))
    study = open_study(storage, full_name, config.seed, exclusive=config.storage is None,
                       prune_rounds=config.prune_rounds,
                       first_params=adapter.default_params() if config.n_trials else None)  # fmt: skip
    objective = make_objective(adapter, tuning, feature_set, config.prune_rounds)
    run_study(study, objective, config.n_trials, config.timeout)
    choice = best_choice(study, adapter)
    iterations = (
        choice.best_iterations or cross_validate(adapter, tuning, choice.params).best_iterations
    )
    n_rounds = max(1, round(float(np.median(iterations))))
    result = cached_refit(cache, adapter, evaluation, choice.params, n_rounds)
    return ModelResult(
        name,
        study.study_name,
        choice.params,
        choice.tuning_auc,
        len(study.get_trials(deepcopy=False)),
        result,
        n_rounds,
        choice=choice.reason,
    )


@dataclass(frozen=True)
class BlendResult:
    """The models' OOF log-odds averaged (batch-independent), and its Platt calibration."""

    oof_logit: np.ndarray
    platt: Platt
    oof_probability: np.ndarray  # cross-fitted calibration: each fold calibrated by the others


def _blend(
    data: StageData, models: list[ModelResult], evaluation: list[FoldMatrices]
) -> BlendResult:
    target = data.target[oof_rows(evaluation)]
    score = blend_logit(*[m.cv.oof for m in models])
    return BlendResult(
        score, Platt.fit(score, target), cross_fitted(score, target, oof_folds(evaluation))
    )


def _metrics(
    config: Stage2Config, data: StageData, models: list[ModelResult], evaluation: list[FoldMatrices],
    feature_set: dict[str, Any], run_id: str, blended: BlendResult,
) -> dict[str, Any]:  # fmt: skip
    rows = oof_rows(evaluation)
    target = data.target[rows]
    patients = data.frame["patient_id"].to_numpy()[rows]
    folds = oof_folds(evaluation)
    per_model = {}
    for model in models:
        summary = _oof_metrics(target, model.cv.oof, patients, config)
        model.oof_auc, model.ci95 = summary["oof_auc"], tuple(summary["oof_auc_ci95"])
        per_model[model.name] = summary | {
            "tuning_auc": model.tuning_auc, "fold_aucs": model.cv.fold_aucs,
            "n_rounds": model.n_rounds, "params": model.params, "study": model.study,
            "n_trials_in_study": model.n_trials, "choice": model.choice,
        }  # fmt: skip
    blend = blended.oof_logit
    fold_aucs = [auc(target[folds == k], blend[folds == k]) for k in range(len(evaluation))]
    tuning_values = [m.tuning_auc for m in models if m.tuning_auc is not None]
    headline = _oof_metrics(target, blend, patients, config)
    calibration = _calibration_metrics(target, blended)
    return {
        "run_id": run_id,
        **headline,
        "chance": chance_text(headline["oof_auc_ci95"], calibration),
        "tuning_auc": max(tuning_values) if tuning_values else None,
        "calibration": calibration,
        "fold_aucs": fold_aucs,
        "models": per_model,
        "n_train": len(target),
        "n_pos": int(target.sum()),
        "n_patients": len(np.unique(patients)),
        "n_test": len(evaluation[0].X_test) if evaluation[0].X_test is not None else 0,
        "feature_groups": feature_set["groups"],
        "backbones": feature_set["backbones"],
        "backbone_provenance": _backbone_provenance(data),
        "n_features": feature_set["n_features"],
        "data_digest": feature_set["data_digest"],
        "code": environment_digest()[:12],  # both stages' source and the libraries' versions
        "dataset": data.dataset,
        "colours": colour_notes(data.provenance) if data.embeddings else [],
        "folds": {
            "n_folds": config.n_folds,
            "tuning_seed": config.seed,
            "eval_seed": config.seed + EVAL_SEED_OFFSET,
            "regrouped": _regrouped(data, config),
        },
        "trials_this_run": config.n_trials,
        "storage": mask_url(config.storage_url),
        "config": config.to_json(),
    }


def colour_notes(provenance: dict[str, Any]) -> list[str]:
    """One line per split whose stored colour order stage 1 settled other than plainly RGB."""
    notes = []
    for split, entry in (provenance.get("channel_order") or {}).items():
        if entry.get("stored") == "bgr":
            how = "detected" if entry.get("requested") == "auto" else "as --channel-order bgr says"
            notes.append(f"{split} images store red and blue swapped ({how}: {entry.get('reason')}); "
                         "stage 1 swapped them back")  # fmt: skip
        elif entry.get("verdict") in ("undetermined", "mixed") or entry.get("disagreeing"):
            notes.append(f"{split} images: colour order {entry.get('verdict')} "
                         f"({entry.get('reason')}), used as {entry.get('stored')}")  # fmt: skip
    return notes


def _oof_metrics(
    target: np.ndarray, score: np.ndarray, patients: np.ndarray, config: Stage2Config
) -> dict[str, Any]:
    """``oof_<metric>`` and ``oof_<metric>_ci95`` (patient bootstrap) for every metric, and
    ``not_reported``: the metrics these data have too few images for, with the reason."""
    summary = metric_summary(target, score, patients, config.n_bootstrap, config.seed)
    reasons = summary.pop("not_reported")
    return {f"oof_{k}": v for k, v in summary.items()} | {"not_reported": reasons}


def _calibration_metrics(target: np.ndarray, blended: BlendResult) -> dict[str, Any]:
    raw = expit(blended.oof_logit)
    calibrated = blended.oof_probability
    return {
        "method": "platt on the mean log-odds of the models, fitted on OOF predictions",
        "slope": blended.platt.slope,
        "intercept": blended.platt.intercept,
        "brier": brier_score_loss(target, calibrated),
        "ece": expected_calibration_error(target, calibrated),
        "brier_uncalibrated": brier_score_loss(target, raw),
        "ece_uncalibrated": expected_calibration_error(target, raw),
        "brier_base_rate": brier_score_loss(target, np.full(len(target), target.mean())),
        "evaluated": "cross-fitted: each fold calibrated by a fit on the other folds",
    }


def _write_outputs(
    out: Path, data: StageData, models: list[ModelResult], evaluation: list[FoldMatrices],
    metrics: dict[str, Any], config: Stage2Config, blended: BlendResult, cache: ContentCache,
) -> None:  # fmt: skip
    rows = oof_rows(evaluation)
    frame = data.frame
    oof = pd.DataFrame({
        "image_name": frame["image_name"].to_numpy()[rows],
        "patient_id": frame["patient_id"].to_numpy()[rows],
        "fold": oof_folds(evaluation),
        "target": data.target[rows],
        **{m.name: m.cv.oof for m in models},
        "blend": expit(blended.oof_logit),
        "probability": blended.oof_probability,
    })  # fmt: skip
    test_pred = None
    if models[0].cv.test_pred is not None:
        test_rows = data.split_index("test")
        tests = {m.name: m.cv.test_pred for m in models if m.cv.test_pred is not None}
        test_logit = blend_logit(*tests.values())
        test_pred = pd.DataFrame({"image_name": frame["image_name"].to_numpy()[test_rows], **tests,
                                  "blend": expit(test_logit), "probability": blended.platt(test_logit)})  # fmt: skip
    metrics["images"] = images_digest(oof)
    metrics["versus"] = versus_earlier(out, Evidence(metrics["run_id"], oof, metrics),
                                       config.n_bootstrap, config.seed)  # fmt: skip
    write_evidence(out, metrics["run_id"], oof, test_pred, metrics)
    write_parquet(oof, out / "oof.parquet")
    if test_pred is not None:
        write_parquet(test_pred, out / "test_pred.parquet")
        write_submission(test_pred, out / "submission.csv")
    importance = pd.DataFrame([
        {"model": m.name, "feature": k, "gain": v} for m in models for k, v in m.cv.importance.items()
    ])  # fmt: skip
    write_parquet(importance, out / "importance.parquet")
    write_metrics(metrics, out / "metrics.json")
    append_run(_run_row(metrics), out / RUNS_FILE)
    if config.report:
        from .galleries import report_galleries
        from .report import write_report

        galleries = report_galleries(oof, data, [(m.name, m.cv.models) for m in models],
                                     evaluation, config.features_dir, cache, blended.platt)  # fmt: skip
        write_report(out, metrics, oof, importance, data, cache, galleries)


def _run_row(metrics: dict[str, Any]) -> dict[str, Any]:
    low, high = metrics["oof_auc_ci95"]
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "run_id": metrics["run_id"],
            "feature_groups": "+".join(metrics["feature_groups"]), "backbones": ",".join(metrics["backbones"]) or "-",
            "trials": metrics["trials_this_run"], "oof_auc": round(metrics["oof_auc"], 4),
            "ci_low": round(low, 4), "ci_high": round(high, 4),
            "tuning_auc": round(metrics["tuning_auc"], 4) if metrics["tuning_auc"] is not None else None,
            "n_train": metrics["n_train"], "n_pos": metrics["n_pos"],
            "n_extra": metrics["extra"]["n_rows"], "seconds": metrics["seconds"],
            "pauc80": metrics["oof_pauc80"], "vs_previous": short_delta(metrics["versus"].get("previous")),
            "vs_best": short_delta(metrics["versus"].get("best")), "images": metrics["images"]}  # fmt: skip
