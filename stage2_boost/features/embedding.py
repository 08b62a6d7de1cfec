"""Per-backbone image features: a reduction fitted on the fold's training rows, or the raw vector."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from ..data import StageData
from .base import FeatureGroup


class EmbeddingFeatures(FeatureGroup):
    group = "embedding"

    def __init__(
        self, slug: str, reduction: str = "pca", n_components: int = 32, seed: int = 0
    ) -> None:
        self.slug, self.reduction, self.n_components, self.seed = (
            slug,
            reduction,
            n_components,
            seed,
        )
        self.pca_: PCA | None = None

    def fit(self, data: StageData, rows: np.ndarray) -> EmbeddingFeatures:
        if self.reduction == "pca":
            vectors = data.embeddings[self.slug][rows]
            k = min(self.n_components, vectors.shape[1], max(1, len(rows) - 1))
            self.pca_ = PCA(k, svd_solver="randomized", random_state=self.seed).fit(vectors)
        return self

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        vectors = data.embeddings[self.slug][rows]
        if self.reduction == "raw":
            columns = [f"{self.slug}__emb_{i:04d}" for i in range(vectors.shape[1])]
            return pd.DataFrame(vectors, columns=columns)
        if self.pca_ is None:
            raise RuntimeError("EmbeddingFeatures.transform called before fit")
        reduced = self.pca_.transform(vectors).astype(np.float32)
        return pd.DataFrame(
            reduced, columns=[f"{self.slug}__pca_{i:02d}" for i in range(reduced.shape[1])]
        )
