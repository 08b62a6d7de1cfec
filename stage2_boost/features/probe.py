"""Linear probes per backbone: logistic regressions on the raw embedding, stacked as features.

``probe`` predicts the label (one score, its log-odds); ``diagnosis`` predicts the diagnosis (a
probability per class: the 2020 winners trained a 9-class target, and a lesion that looks like a
keratosis or a carcinoma tells the stacker more than "not melanoma"). They use labels, so they are
fitted inside each fold's training part only. The training rows get out-of-fold scores from an
inner patient-grouped split (a row's own label never shapes its score); every other row is scored
by a probe fitted on the whole training part.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data import StageData
from ..errors import ConfigError
from .base import FeatureGroup

INNER_FOLDS = 5
PROBE_C = 0.05  # strong L2: 1280 dimensions, a few thousand rows
MIN_CLASS = 10  # a diagnosis with fewer images in the training split is counted as "other"


class LinearProbeFeatures(FeatureGroup):
    group = "probe"
    method = "decision_function"

    def __init__(self, slug: str, seed: int = 0) -> None:
        self.slug, self.seed = slug, seed
        self.model_: Pipeline | None = None
        self.oof_: dict[int, np.ndarray] = {}

    def labels(self, data: StageData, rows: np.ndarray) -> np.ndarray:
        """What the probe learns to predict, for ``rows``."""
        return data.target[rows]

    def frame(self, scores: np.ndarray) -> pd.DataFrame:
        """The group's columns from the model's scores."""
        return pd.DataFrame({f"{self.slug}__probe": scores})

    def fit(self, data: StageData, rows: np.ndarray) -> LinearProbeFeatures:
        X, y = data.embeddings[self.slug][rows], self.labels(data, rows)
        groups = data.frame["patient_id"].to_numpy()[rows]
        splitter = StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=self.seed)
        with warnings.catch_warnings():  # a rare class in fewer than INNER_FOLDS groups: fine
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            oof = cross_val_predict(
                linear_probe(), X, y, groups=groups, cv=splitter, method=self.method
            )
        self.oof_ = dict(zip(rows.tolist(), oof, strict=True))
        self.model_ = linear_probe().fit(X, y)
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.model_ is None:
            return {}, {}
        scaler, logistic = self.model_[0], self.model_[-1]
        return {"classes": logistic.classes_.tolist()}, {
            "scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_,
            "coef": logistic.coef_, "intercept": logistic.intercept_,
        }  # fmt: skip

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The probe fitted on the whole training part (new rows never had inner OOF scores)."""
        model = linear_probe()
        scaler, logistic = model[0], model[-1]
        scaler.mean_, scaler.scale_ = arrays["scaler_mean"], arrays["scaler_scale"]
        scaler.var_ = arrays["scaler_scale"] ** 2
        scaler.n_features_in_ = logistic.n_features_in_ = len(arrays["scaler_mean"])
        logistic.coef_, logistic.intercept_ = arrays["coef"], arrays["intercept"]
        logistic.classes_ = np.array(values.get("classes", [0, 1]))  # older models: the label
        self.model_, self.oof_ = model, {}

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        if self.model_ is None:
            raise RuntimeError(f"{type(self).__name__}.transform called before fit")
        scores = getattr(self.model_, self.method)(data.embeddings[self.slug][rows])
        known = np.array([r in self.oof_ for r in rows.tolist()], dtype=bool)
        if known.any():
            scores[known] = np.stack([self.oof_[r] for r in rows[known].tolist()])
        return self.frame(scores)


class DiagnosisFeatures(LinearProbeFeatures):
    """The diagnosis head: one probability per diagnosis with at least ``MIN_CLASS`` images in
    the training split (the others together as "other", no diagnosis as "unknown"). The class
    list is the training split's, so every fold has the same columns; a class that a fold's
    training part lacks gets probability 0."""

    group = "diagnosis"
    method = "predict_proba"

    def __init__(self, slug: str, seed: int = 0) -> None:
        super().__init__(slug, seed)
        self.vocabulary_: list[str] = []

    def labels(self, data: StageData, rows: np.ndarray) -> np.ndarray:
        return diagnosis_classes(data)[rows]

    def fit(self, data: StageData, rows: np.ndarray) -> DiagnosisFeatures:
        self.vocabulary_ = np.unique(diagnosis_classes(data)[data.split_index("train")]).tolist()
        if len(set(self.labels(data, rows))) < 2:
            raise ConfigError(
                f"Feature group 'diagnosis' needs two or more diagnoses among the training images; "
                f"these have {self.vocabulary_}. Drop the group, or add the diagnosis column."
            )
        super().fit(data, rows)
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        values, arrays = super().get_state()
        return values | {"vocabulary": self.vocabulary_}, arrays

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().set_state(values, arrays)
        self.vocabulary_ = values["vocabulary"]

    def frame(self, scores: np.ndarray) -> pd.DataFrame:
        assert self.model_ is not None
        found = pd.DataFrame(scores, columns=list(self.model_[-1].classes_))
        found = found.reindex(columns=self.vocabulary_, fill_value=0.0)
        return found.set_axis([f"{self.slug}__dx_{_slug(c)}" for c in self.vocabulary_], axis=1)


def diagnosis_classes(data: StageData) -> np.ndarray:
    """Each row's diagnosis class: its diagnosis, "other" where it is rare, "unknown" where
    missing."""
    column = data.frame.get("diagnosis", pd.Series(pd.NA, data.frame.index))
    text = column.astype("string").str.strip().str.lower().fillna("unknown")
    counts = text[data.frame["split"] == "train"].value_counts()
    return text.where(text.map(counts).fillna(0) >= MIN_CLASS, "other").to_numpy(object)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def linear_probe() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=1000))
