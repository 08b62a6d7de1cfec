"""``train --target diagnosis``: the multi-class model of the ``diagnosis`` group on its own.

A logistic regression on the backbones' embeddings side by side (the diagnosis group's probe),
fitted in each of stage 2's evaluation folds and scored on the fold it never saw; reported per
class as a one-vs-rest AUC and, over all classes, as balanced accuracy (the ISIC 2019 challenge's
metric), each with a patient-bootstrap 95% interval.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from stage1_embed.folds import load_or_make_eval_folds, read_same_lesion_links

from .config import Stage2Config
from .data import load_stage_data
from .errors import ConfigError
from .features.probe import diagnosis_classes, linear_probe
from .metrics import auc, bootstrap_auc_ci, patient_draws, percentile_interval
from .outputs import write_metrics, write_parquet

logger = logging.getLogger(__name__)
DIAGNOSIS_FILE = "diagnosis.json"


def run_diagnosis(config: Stage2Config) -> dict[str, Any]:
    """Out-of-fold class probabilities and their metrics; writes ``diagnosis.json`` and
    ``diagnosis_oof.parquet`` to the stage 2 folder."""
    data = load_stage_data(
        config.features_dir, list(config.backbones) if config.backbones else None
    )
    if not data.embeddings:
        raise ConfigError(
            f"python -m stage2_boost train --target diagnosis needs embeddings; none in "
            f"{config.features_dir}: run stage 1 with backbones first."
        )
    rows = data.train_index()[0]
    train = data.frame.iloc[rows]
    classes = diagnosis_classes(data)[rows]
    if len(set(classes)) < 2:
        raise ConfigError(f"python -m stage2_boost train --target diagnosis needs two or more diagnoses; {config.features_dir} "
                          f"has {sorted(set(classes))}. Fill the diagnosis column of train.csv.")  # fmt: skip
    out = config.stage2_dir
    out.mkdir(parents=True, exist_ok=True)
    links = read_same_lesion_links(config.features_dir, train) if config.merge_duplicates else []
    folds, _ = load_or_make_eval_folds(train, config.n_folds, config.seed, out,
                                       config.merge_duplicates, links)  # fmt: skip
    vectors = np.hstack([data.embeddings[slug][rows] for slug in sorted(data.embeddings)])
    names = sorted(set(classes))
    probability = np.zeros((len(rows), len(names)))
    for fold in range(config.n_folds):
        held = folds == fold
        model = linear_probe().fit(vectors[~held], classes[~held])
        columns = [names.index(c) for c in model[-1].classes_]
        probability[np.ix_(held, columns)] = model.predict_proba(vectors[held])
        logger.info("diagnosis: fold %d of %d scored", fold + 1, config.n_folds)
    patients = train["patient_id"].astype(str).to_numpy()
    result = diagnosis_metrics(
        classes, probability, names, patients, config.n_bootstrap, config.seed
    )
    result |= {"dataset": data.dataset, "backbones": sorted(data.embeddings), "n_images": len(rows)}
    oof = pd.DataFrame(probability, columns=[f"p_{n}" for n in names])
    write_parquet(oof.assign(image_name=train["image_name"].to_numpy(), diagnosis=classes,
                             fold=folds), out / "diagnosis_oof.parquet")  # fmt: skip
    write_metrics(result, out / DIAGNOSIS_FILE)
    return result


def diagnosis_metrics(
    classes: np.ndarray, probability: np.ndarray, names: list[str], patients: np.ndarray,
    n_boot: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Per-class one-vs-rest AUC and balanced accuracy, each with a patient-bootstrap interval."""
    per_class = {}
    for i, name in enumerate(names):
        target = classes == name
        per_class[name] = {"n": int(target.sum()), "auc": auc(target, probability[:, i]),
                           "auc_ci95": list(bootstrap_auc_ci(target, probability[:, i], patients,
                                                             n_boot, seed))}  # fmt: skip
    predicted = np.array(names, dtype=object)[probability.argmax(axis=1)]
    draws, codes = patient_draws(patients, n_boot, seed)
    with warnings.catch_warnings():  # a replicate that drew no image of a rare class
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        replicates = [balanced_accuracy_score(classes, predicted, sample_weight=weights[codes])
                      for weights in draws]  # fmt: skip
    return {"classes": per_class, "balanced_accuracy": balanced_accuracy_score(classes, predicted),
            "balanced_accuracy_ci95": percentile_interval(np.array(replicates))}  # fmt: skip


def format_diagnosis(result: dict[str, Any], out: Path) -> str:
    low, high = result["balanced_accuracy_ci95"]
    lines = [f"diagnosis model on {result['dataset']} ({result['n_images']} images; "
             f"{', '.join(result['backbones'])}): balanced accuracy "
             f"{result['balanced_accuracy']:.3f} [{low:.3f}, {high:.3f}]",
             "  one-vs-rest AUC [95% CI, patient bootstrap]:"]  # fmt: skip
    for name, row in result["classes"].items():
        lines.append(f"    {name:<45} {row['auc']:.3f} [{row['auc_ci95'][0]:.3f}, "
                     f"{row['auc_ci95'][1]:.3f}]  ({row['n']} images)")  # fmt: skip
    lines.append(f"  written: {out / DIAGNOSIS_FILE}, {out / 'diagnosis_oof.parquet'}")
    return "\n".join(lines)
