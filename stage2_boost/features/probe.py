"""A linear probe per backbone: a logistic regression on the raw embedding, stacked as a feature.

It uses labels, so it is fitted inside each fold's training part only. The training rows get
out-of-fold scores from an inner patient-grouped split (a row's own label never shapes its score);
every other row is scored by a probe fitted on the whole training part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data import StageData
from .base import FeatureGroup

INNER_FOLDS = 5
PROBE_C = 0.05  # strong L2: 1280 dimensions, a few thousand rows


class LinearProbeFeatures(FeatureGroup):
    group = "probe"

    def __init__(self, slug: str, seed: int = 0) -> None:
        self.slug, self.seed = slug, seed
        self.model_: Pipeline | None = None
        self.oof_: dict[int, float] = {}

    def fit(self, data: StageData, rows: np.ndarray) -> LinearProbeFeatures:
        X = data.embeddings[self.slug][rows]
        y = data.target[rows]
        groups = data.frame["patient_id"].to_numpy()[rows]
        splitter = StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=self.seed)
        oof = cross_val_predict(
            _probe(), X, y, groups=groups, cv=splitter, method="decision_function"
        )
        self.oof_ = dict(zip(rows.tolist(), oof.tolist(), strict=True))
        self.model_ = _probe().fit(X, y)
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.model_ is None:
            return {}, {}
        scaler, logistic = self.model_[0], self.model_[-1]
        return {}, {"scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_,
                    "coef": logistic.coef_, "intercept": logistic.intercept_}  # fmt: skip

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The probe fitted on the whole training part (new rows never had inner OOF scores)."""
        model = _probe()
        scaler, logistic = model[0], model[-1]
        scaler.mean_, scaler.scale_ = arrays["scaler_mean"], arrays["scaler_scale"]
        scaler.var_ = arrays["scaler_scale"] ** 2
        scaler.n_features_in_ = logistic.n_features_in_ = len(arrays["scaler_mean"])
        logistic.coef_, logistic.intercept_ = arrays["coef"], arrays["intercept"]
        logistic.classes_ = np.array([0, 1])
        self.model_, self.oof_ = model, {}

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        if self.model_ is None:
            raise RuntimeError("LinearProbeFeatures.transform called before fit")
        scores = self.model_.decision_function(data.embeddings[self.slug][rows])
        known = np.array([r in self.oof_ for r in rows.tolist()], dtype=bool)
        scores[known] = [self.oof_[r] for r in rows[known].tolist()]
        return pd.DataFrame({f"{self.slug}__probe": scores})


def _probe() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=1000))
