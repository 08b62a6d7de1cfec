"""Label-free per-patient statistics, computed within each source (primary or extra set) and split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import StageData
from .base import LabelFreeGroup


class PatientFeatures(LabelFreeGroup):
    group = "patient"

    def compute(self, data: StageData) -> pd.DataFrame:
        frame = data.frame.assign(age=data.frame["age_approx"].astype(float))
        by_patient = frame.groupby(["source", "split", "patient_id"], sort=False)
        n_images = by_patient["image_name"].transform("size")
        age_min = by_patient["age"].transform("min")
        age_max = by_patient["age"].transform("max")
        span = (age_max - age_min).replace(0, np.nan)
        site = frame["anatom_site_general_challenge"].astype("string").fillna("<missing>")
        same_site = (
            frame.assign(site=site)
            .groupby(["source", "split", "patient_id", "site"], sort=False)["image_name"]
            .transform("size")
        )
        return pd.DataFrame(
            {
                "patient__n_images": n_images.to_numpy(float),
                "patient__age_min": age_min.to_numpy(float),
                "patient__age_max": age_max.to_numpy(float),
                "patient__age_minus_min": (frame["age"] - age_min).to_numpy(float),
                "patient__age_rel": ((frame["age"] - age_min) / span).to_numpy(float),
                "patient__n_same_site": same_site.to_numpy(float),
                "patient__same_site_frac": (same_site / n_images).to_numpy(float),
                "patient__n_visits": by_patient["age"].transform("nunique").to_numpy(float),
            }
        )
