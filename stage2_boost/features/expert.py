"""The fine-tuned experts' malignancy probabilities (the expert stage), stacked as features.

They are out of fold already (each training image scored by the fold model that never saw it,
on the folds stage 2 evaluates with), so nothing is fitted on labels here. ``logit`` feeds the
log-odds; ``rank`` the percentile among the fold's training rows (fitted on them only, so a new
image's value does not depend on the rest of its batch). Extra training rows have no expert
probability (they are never held out) and get a missing value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import StageData
from .base import FeatureGroup

_EPS = 1e-6


class ExpertFeatures(FeatureGroup):
    group = "expert"

    def __init__(self, slug: str, transform: str = "logit") -> None:
        self.slug, self.transform_name = slug, transform
        self.reference_: np.ndarray | None = None

    def fit(self, data: StageData, rows: np.ndarray) -> ExpertFeatures:
        values = data.experts[self.slug][rows]
        self.reference_ = np.sort(values[np.isfinite(values)])
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {} if self.reference_ is None else {"reference": self.reference_}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.reference_ = arrays.get("reference")

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        p = data.experts[self.slug][rows].astype(float)
        if self.transform_name == "rank":
            if self.reference_ is None or not len(self.reference_):
                raise RuntimeError("ExpertFeatures(rank).transform called before fit")
            value = np.searchsorted(self.reference_, p, side="right") / len(self.reference_)
            value[~np.isfinite(p)] = np.nan
        else:
            clipped = np.clip(p, _EPS, 1 - _EPS)
            value = np.log(clipped / (1 - clipped))
        return pd.DataFrame({f"expert__{self.slug}": value})
