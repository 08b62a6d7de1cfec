"""Every image score relative to the patient's other images: the probes' scores, the experts'
probabilities and the neighbours' melanoma share, each as its z-score and percentile rank among
the patient's images (the ISIC 2024 winners' largest single gain: a lesion that scores high for
this patient stands out even where it scores low for the population).

No label is used: the scores are already out of fold, and the statistics take only the images of
the same patient, split and source in the rows being built. A patient with one image has nothing
to compare with and gets missing values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import StageData
from .base import DerivedGroup

SCORE_SUFFIXES = ("__probe", "__knn_share")


class PatientScoreFeatures(DerivedGroup):
    group = "patient-scores"

    def derive(self, data: StageData, rows: np.ndarray, built: pd.DataFrame) -> pd.DataFrame:
        scores = [
            c for c in built.columns if c.endswith(SCORE_SUFFIXES) or c.startswith("expert__")
        ]
        keys = data.frame.iloc[rows][["source", "split", "patient_id"]].astype(str)
        patient = pd.Series(pd.factorize(keys.agg("|".join, axis=1))[0], index=built.index)
        values = built[scores].astype(np.float64)
        grouped = values.groupby(patient)
        mean, spread = grouped.transform("mean"), grouped.transform("std").to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # one image: no spread, NaN below
            z = np.where(spread > 1e-12, (values - mean) / spread, 0.0)
        alone = (patient.map(patient.value_counts()) < 2).to_numpy()[
            :, None
        ] | values.isna().to_numpy()
        z[alone] = np.nan
        rank = grouped.rank(pct=True).mask(alone)
        names = [c.replace("__", "_") for c in scores]
        out = pd.concat([pd.DataFrame(z, columns=[f"patient_scores__{n}_z" for n in names]),
                         rank.set_axis([f"patient_scores__{n}_rank" for n in names], axis=1)], axis=1)  # fmt: skip
        return out.astype(np.float32)
