"""The interface of a feature group: fit on a fold's training rows, then transform any rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pandas as pd

from ..data import StageData


class FeatureGroup(ABC):
    """A switchable set of namespaced feature columns (``<prefix>__<name>``)."""

    group: str  # the name users switch on with --features

    def fit(self, data: StageData, rows: np.ndarray) -> FeatureGroup:
        """Learn whatever the group learns, from ``rows`` only (a fold's training part)."""
        return self

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What ``fit`` learned, as JSON values and numeric arrays (a saved model stores them)."""
        return {}, {}

    def set_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned, as if ``fit`` had run."""
        del values, arrays  # a group that learns nothing has nothing to restore

    @abstractmethod
    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        """Feature columns for ``rows`` (positions in ``data.frame``), index 0..len(rows)-1."""


class LabelFreeGroup(FeatureGroup):
    """A group computed once for all rows without labels or fitting (per-split statistics)."""

    def __init__(self) -> None:
        self._cache: pd.DataFrame | None = None
        self._cache_for: int | None = None

    @abstractmethod
    def compute(self, data: StageData) -> pd.DataFrame:
        """Features for every row of ``data.frame``."""

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        if self._cache is None or self._cache_for != id(data):
            self._cache, self._cache_for = self.compute(data), id(data)
        return self._cache.iloc[rows].reset_index(drop=True)


class DerivedGroup(FeatureGroup):
    """A group computed from the other groups' columns of the same rows (after them)."""

    def transform(self, data: StageData, rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(index=range(len(rows)))

    @abstractmethod
    def derive(self, data: StageData, rows: np.ndarray, built: pd.DataFrame) -> pd.DataFrame:
        """Columns for ``rows`` from ``built``, the other groups' columns for the same rows."""
