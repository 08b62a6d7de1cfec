"""Which data source a row comes from (the primary data or an ``--extra-data`` set).

Opt-in: validation rows are always primary, so the feature can only let the model learn offsets
between the sources' label rates (e.g. HAM10000's melanoma share) from the training part.
"""

from __future__ import annotations

import pandas as pd

from ..data import StageData
from .base import LabelFreeGroup


class SourceFeatures(LabelFreeGroup):
    group = "source"

    def compute(self, data: StageData) -> pd.DataFrame:
        levels = [data.dataset, *data.extra_sources]
        return pd.DataFrame(
            {"source__source": pd.Categorical(data.frame["source"].to_numpy(), categories=levels)}
        )
