"""Which data source a row comes from (the primary data or an ``--extra-data`` set).

Opt-in: validation rows are always primary, so the feature can only let the model learn offsets
between the sources' label rates (e.g. HAM10000's melanoma share) from the training part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import StageData
from .base import LabelFreeGroup


class SourceFeatures(LabelFreeGroup):
    group = "source"

    def __init__(self) -> None:
        super().__init__()
        self.levels_: list[str] | None = None

    def fit(self, data: StageData, rows: np.ndarray) -> SourceFeatures:
        self.levels_ = [data.dataset, *data.extra_sources]
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"levels": self.levels_}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.levels_ = list(values["levels"])

    def compute(self, data: StageData) -> pd.DataFrame:
        """Primary rows get the training run's primary level, also when a saved model scores
        another dataset: new images are scored as primary data."""
        levels = self.levels_ or [data.dataset, *data.extra_sources]
        values = np.where(data.is_extra, data.frame["source"].to_numpy(), levels[0])
        return pd.DataFrame({"source__source": pd.Categorical(values, categories=levels)})
