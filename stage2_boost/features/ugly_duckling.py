"""Label-free "ugly duckling" features: how unlike the patient's other lesions an image looks.

Computed per backbone on L2-normalised embeddings, within each split and patient. A patient with a
single image gets missing values (nothing to compare with).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import StageData
from .base import LabelFreeGroup


class UglyDucklingFeatures(LabelFreeGroup):
    group = "ugly-duckling"

    def __init__(self, slug: str) -> None:
        super().__init__()
        self.slug = slug

    def compute(self, data: StageData) -> pd.DataFrame:
        vectors = data.embeddings[self.slug].astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        out = np.full((len(vectors), 4), np.nan)
        groups = data.frame.groupby(["source", "split", "patient_id"], sort=False).indices
        for rows in groups.values():
            if len(rows) > 1:
                out[rows] = patient_outlier_stats(vectors[rows])
        names = ("dist_to_others", "dist_z", "dist_rank", "nearest_dist")
        return pd.DataFrame(out, columns=[f"{self.slug}__ud_{n}" for n in names])


def patient_outlier_stats(vectors: np.ndarray) -> np.ndarray:
    """Per image of one patient (n >= 2): distance to the mean of the others, its z-score and
    rank (0..1) within the patient, and distance to the nearest other image."""
    n = len(vectors)
    others_mean = (vectors.sum(axis=0) - vectors) / (n - 1)
    dist = np.linalg.norm(vectors - others_mean, axis=1)
    std = dist.std()
    z = (dist - dist.mean()) / std if std > 0 else np.zeros(n)
    rank = (dist.argsort().argsort() / (n - 1)) if n > 1 else np.zeros(n)
    pairwise = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    np.fill_diagonal(pairwise, np.inf)
    return np.column_stack([dist, z, rank, pairwise.min(axis=1)])
