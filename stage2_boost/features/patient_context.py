"""Patient context as the ISIC 2024 winners built it, per backbone: each image's embedding
components as z-scores against its patient's other images, and the local outlier factor of its
embedding among them.

The components come from a PCA fitted on the fold's training rows (as the ``embedding`` group's);
the z-scores and the outlier factor use no label and only the images of the same patient, split
and source. Patients with fewer than three images get missing values (no spread to compare with).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import LocalOutlierFactor

from ..data import StageData
from .embedding import EmbeddingFeatures

MIN_IMAGES = 3
NEIGHBOURS = 10


class PatientContextFeatures(EmbeddingFeatures):
    group = "patient-context"

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        components = super().transform(data, rows).to_numpy(np.float64)
        vectors = data.embeddings[self.slug][rows].astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        z = np.full_like(components, np.nan)
        outlier = np.full(len(rows), np.nan)
        keys = data.frame.iloc[rows][["source", "split", "patient_id"]].astype(str)
        for members in keys.groupby(list(keys.columns), sort=False).indices.values():
            if len(members) >= MIN_IMAGES:
                z[members] = leave_one_out_z(components[members])
                # half the patient at most: with every other image as a neighbour, LOF is ~1 for all
                lof = LocalOutlierFactor(n_neighbors=min(NEIGHBOURS, len(members) // 2))
                outlier[members] = -lof.fit(vectors[members]).negative_outlier_factor_
        columns = [f"{self.slug}__pc_z{i:02d}" for i in range(z.shape[1])]
        frame = pd.DataFrame(z.astype(np.float32), columns=columns)
        frame[f"{self.slug}__pc_lof"] = outlier.astype(np.float32)
        return frame


def leave_one_out_z(values: np.ndarray) -> np.ndarray:
    """Each row's z-score against the other rows (n >= 3): (x - mean of others) / their std."""
    n = len(values)
    total, squares = values.sum(axis=0), (values**2).sum(axis=0)
    mean = (total - values) / (n - 1)
    variance = (squares - values**2) / (n - 1) - mean**2
    std = np.sqrt(np.clip(variance, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 1e-12, (values - mean) / std, 0.0)
