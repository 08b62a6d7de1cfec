"""Original width, height and file size: they predict the label through the acquiring clinic,
not the lesion, so they are used only when asked for (and the run then reports AUC without them).
"""

from __future__ import annotations

import pandas as pd

from ..data import StageData
from ..errors import ConfigError
from .base import LabelFreeGroup


class AcquisitionFeatures(LabelFreeGroup):
    group = "acquisition"

    def compute(self, data: StageData) -> pd.DataFrame:
        frame = data.frame
        if frame["width"].isna().all():
            raise ConfigError(
                "The acquisition feature group needs image sizes, but this manifest read no images "
                "(metadata-only stage 1). Run stage 1 with backbones, or drop 'acquisition'."
            )
        width, height = frame["width"].astype(float), frame["height"].astype(float)
        return pd.DataFrame(
            {
                "acq__width": width.to_numpy(),
                "acq__height": height.to_numpy(),
                "acq__aspect": (width / height).to_numpy(),
                "acq__file_size": frame["file_size"].astype(float).to_numpy(),
            }
        )
