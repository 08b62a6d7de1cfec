"""Age, sex and anatomic site. Missing values stay missing; category levels come from the fold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import StageData
from .base import FeatureGroup

CATEGORICAL = {"meta__sex": "sex", "meta__site": "anatom_site_general_challenge"}


class MetadataFeatures(FeatureGroup):
    group = "metadata"

    def __init__(self) -> None:
        self.levels_: dict[str, list[str]] = {}

    def fit(self, data: StageData, rows: np.ndarray) -> MetadataFeatures:
        train = data.frame.iloc[rows]
        self.levels_ = {
            name: sorted(train[column].dropna().astype(str).unique())
            for name, column in CATEGORICAL.items()
        }
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"levels": self.levels_}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.levels_ = {name: list(levels) for name, levels in values["levels"].items()}

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        part = data.frame.iloc[rows]
        out = pd.DataFrame({"meta__age": part["age_approx"].astype(float).to_numpy()})
        for name, column in CATEGORICAL.items():
            values = part[column].astype("string").to_numpy()
            out[name] = pd.Categorical(values, categories=self.levels_[name])
        return out
