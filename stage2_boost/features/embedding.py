"""Per-backbone image features: a reduction fitted on the fold's training rows, or the raw vector."""

from __future__ import annotations

from typing import Any

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

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.pca_ is None:
            return {}, {}
        pca = self.pca_
        return {"n_components": int(pca.n_components_)}, {
            "components": pca.components_, "mean": pca.mean_,
            "explained_variance": pca.explained_variance_,
        }  # fmt: skip

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if self.reduction != "pca":
            return
        pca = PCA(values["n_components"])
        pca.components_, pca.mean_ = arrays["components"], arrays["mean"]
        pca.explained_variance_ = arrays["explained_variance"]
        pca.n_components_, pca.n_features_in_ = values["n_components"], len(arrays["mean"])
        self.pca_ = pca

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
