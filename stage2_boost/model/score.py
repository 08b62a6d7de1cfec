"""Score rows of stage 1 outputs with a saved model: the fold features rebuilt from the saved
state, every fold model, the models' mean log-odds, and the calibrated probability.

An image's probability depends on its own row and its own patient's other images (patient and
ugly-duckling features, computed within the scored split), and on nothing else in the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from ..data import StageData, comparable_provenance
from ..errors import ContractError
from ..features import feature_group_of, transform_all
from .calibration import blend_logit
from .load import SavedModel

logger = logging.getLogger(__name__)
_CHECKED_PROVENANCE = ("weights", "preprocessing", "tta_views", "precision")
_READABLE = {"meta__age": "age", "meta__sex": "sex", "meta__site": "anatomic site"}


@dataclass
class Scored:
    """One row per scored image (model columns, blend, probability), and optional contributions."""

    predictions: pd.DataFrame
    contributions: pd.DataFrame | None = None  # long form: image_name, feature_group, contribution


def check_embeddings_match(model: SavedModel, data: StageData) -> None:
    """The features must come from the model's backbones with the model's preprocessing."""
    for slug, expected in model.backbones.items():
        found = data.embedding_provenance.get(slug)
        if found is None:
            raise ContractError(
                f"The model needs embeddings of backbone {slug!r}, which these features lack. Run "
                f"stage 1 with the model: python -m stage1_embed --model {model.folder} ..."
            )
        for key in _CHECKED_PROVENANCE:
            mine, theirs = (
                comparable_provenance(expected.get(key)),
                comparable_provenance(found.get(key)),
            )
            if mine != theirs:
                raise ContractError(
                    f"Backbone {slug}: these embeddings were made with {key} {found.get(key)}, the "
                    f"model was trained on {key} {expected.get(key)}. Rerun stage 1 with --model "
                    f"{model.folder} so it uses the model's settings."
                )


def score_rows(
    model: SavedModel, data: StageData, rows: np.ndarray, explain: bool = False
) -> Scored:
    """Probabilities for ``rows`` (positions in ``data.frame``)."""
    check_embeddings_match(model, data)
    per_model: dict[str, list[np.ndarray]] = {name: [] for name in model.boosters}
    contributions: list[np.ndarray] = []
    columns = model.columns
    for fold, groups in enumerate(model.fold_groups):
        X = transform_all(groups, data, rows)
        if list(X.columns) != columns:
            raise ContractError(
                f"The rebuilt features differ from the model's columns ({len(X.columns)} vs "
                f"{len(columns)}); the features folder does not fit this model."
            )
        for name, (adapter, fits) in model.boosters.items():
            per_model[name].append(adapter.predict(fits[fold], X))
            if explain:
                contributions.append(adapter.contributions(fits[fold], X))
    means = {name: np.mean(preds, axis=0) for name, preds in per_model.items()}
    score = blend_logit(*means.values())
    frame = data.frame.iloc[rows]
    predictions = pd.DataFrame({
        "image_name": frame["image_name"].to_numpy(), "patient_id": frame["patient_id"].to_numpy(),
        "probability": model.platt(score), **means, "blend": expit(score),
    })  # fmt: skip
    if not explain:
        return Scored(predictions)
    return Scored(
        predictions, grouped_contributions(np.mean(contributions, axis=0), columns, predictions)
    )


def grouped_contributions(
    values: np.ndarray, columns: list[str], predictions: pd.DataFrame
) -> pd.DataFrame:
    """Contributions (log-odds, mean over folds and models) summed per readable feature group."""
    names = [_READABLE.get(c, feature_group_of(c)) for c in columns] + ["baseline"]
    wide = pd.DataFrame(values, columns=pd.Index(range(len(names))))
    wide.columns = names
    summed = wide.T.groupby(level=0, sort=False).sum().T
    summed.insert(0, "image_name", predictions["image_name"].to_numpy())
    return summed.melt(id_vars="image_name", var_name="feature_group", value_name="contribution")


def top_reasons(contributions: pd.DataFrame, k: int = 3) -> pd.Series:
    """Per image, the ``k`` groups that moved its score most, e.g. 'ugly-duckling +0.84; age +0.31'."""
    parts = contributions[contributions["feature_group"] != "baseline"].copy()
    parts["size"] = parts["contribution"].abs()
    parts = parts.sort_values(["image_name", "size"], ascending=[True, False], kind="stable")
    top = parts.groupby("image_name", sort=False).head(k)
    return top.groupby("image_name", sort=False).apply(
        lambda g: "; ".join(
            f"{n} {v:+.2f}" for n, v in zip(g["feature_group"], g["contribution"], strict=True)
        ),
        include_groups=False,
    )
