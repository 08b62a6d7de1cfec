"""Nearest labelled neighbours per backbone: the share of melanomas among an image's ``K`` most
similar training images (Tschandl et al. 2019: a 16-neighbour vote on CNN features matched the
network's own softmax on three dermoscopy sets), and its cosine to the closest melanoma.

Labels are used, so everything is fitted on the fold's training rows: a PCA to ``DIMS``
dimensions (fewer numbers to compare and to store with a saved model), then cosine neighbours
among those rows. A training row's neighbours exclude its own patient, so its label, and its
lesion's other images, never vote on it; any other row is compared with every training row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from ..data import StageData
from .base import FeatureGroup

K = 16
DIMS = 128
CHUNK = 2048  # rows compared at a time: CHUNK x training rows of similarities in memory


class NeighbourFeatures(FeatureGroup):
    group = "neighbours"

    def __init__(self, slug: str, seed: int = 0) -> None:
        self.slug, self.seed = slug, seed
        self.pca_: PCA | None = None
        self.reference_ = np.zeros((0, 0), np.float32)  # unit vectors of the training rows
        self.labels_ = np.zeros(0, bool)
        self.own_: dict[int, int] = {}  # training row -> its position in reference_
        self.patients_ = np.zeros(0, np.int64)  # reference rows' patient codes

    def fit(self, data: StageData, rows: np.ndarray) -> NeighbourFeatures:
        vectors = data.embeddings[self.slug][rows]
        dims = min(DIMS, vectors.shape[1], max(1, len(rows) - 1))
        self.pca_ = PCA(dims, svd_solver="randomized", random_state=self.seed).fit(vectors)
        self.reference_ = self._unit(vectors)
        self.labels_ = data.target[rows].astype(bool)
        self.own_ = {row: i for i, row in enumerate(rows.tolist())}
        self.patients_ = pd.factorize(data.frame["patient_id"].to_numpy()[rows])[0]
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.pca_ is None:
            return {}, {}
        return {"dims": int(self.pca_.n_components_)}, {
            "components": self.pca_.components_, "mean": self.pca_.mean_,
            "reference": self.reference_, "labels": self.labels_.astype(np.uint8),
        }  # fmt: skip

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The training rows as reference; new rows are compared with all of them."""
        pca = PCA(values["dims"])
        pca.components_, pca.mean_ = arrays["components"], arrays["mean"]
        pca.n_components_, pca.n_features_in_ = values["dims"], len(arrays["mean"])
        self.pca_, self.reference_ = pca, arrays["reference"]
        self.labels_, self.own_ = arrays["labels"].astype(bool), {}
        self.patients_ = np.full(len(self.labels_), -1)

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        if self.pca_ is None:
            raise RuntimeError("NeighbourFeatures.transform called before fit")
        unit = self._unit(data.embeddings[self.slug][rows])
        own = np.array([self.own_.get(r, -1) for r in rows.tolist()])
        share, closest = np.empty(len(rows)), np.empty(len(rows))
        for start in range(0, len(rows), CHUNK):
            part = slice(start, start + CHUNK)
            share[part], closest[part] = self._vote(unit[part], own[part])
        return pd.DataFrame({f"{self.slug}__knn_share": share.astype(np.float32),
                             f"{self.slug}__knn_closest": closest.astype(np.float32)})  # fmt: skip

    def _unit(self, vectors: np.ndarray) -> np.ndarray:
        assert self.pca_ is not None
        reduced = self.pca_.transform(vectors).astype(np.float32)
        return reduced / np.linalg.norm(reduced, axis=1, keepdims=True).clip(min=1e-12)

    def _vote(self, unit: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Melanoma share of the K nearest, and the cosine to the nearest melanoma, for one chunk;
        a training row's own patient is left out."""
        similarity = unit @ self.reference_.T
        is_training = own >= 0
        same = self.patients_[None, :] == self.patients_[np.where(is_training, own, 0)][:, None]
        similarity[is_training[:, None] & same] = -np.inf
        k = min(K, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        counted = np.isfinite(np.take_along_axis(similarity, nearest, axis=1))
        share = (self.labels_[nearest] & counted).sum(axis=1) / counted.sum(axis=1).clip(min=1)
        closest = np.where(self.labels_[None, :], similarity, -np.inf).max(axis=1, initial=-np.inf)
        return share, np.where(np.isfinite(closest), closest, np.nan)
