"""Feature groups by name, and building a fold's feature matrices from them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data import StageData
from .acquisition import AcquisitionFeatures
from .base import DerivedGroup, FeatureGroup
from .embedding import EmbeddingFeatures
from .expert import ExpertFeatures
from .metadata import MetadataFeatures
from .neighbours import NeighbourFeatures
from .patient import PatientFeatures
from .patient_context import PatientContextFeatures
from .patient_scores import PatientScoreFeatures
from .probe import DiagnosisFeatures, LinearProbeFeatures
from .source import SourceFeatures
from .ugly_duckling import UglyDucklingFeatures


def create_feature_groups(
    names: Sequence[str], backbones: Sequence[str], reduction: str, n_components: int, seed: int,
    experts: Sequence[str] = (), expert_transform: str = "logit",
) -> list[FeatureGroup]:  # fmt: skip
    """Fresh (unfitted) groups; image groups get one instance per backbone, ``expert`` one per
    fine-tuned expert."""
    groups: list[FeatureGroup] = []
    for name in names:
        if name == "metadata":
            groups.append(MetadataFeatures())
        elif name == "patient":
            groups.append(PatientFeatures())
        elif name == "acquisition":
            groups.append(AcquisitionFeatures())
        elif name == "source":
            groups.append(SourceFeatures())
        elif name == "expert":
            groups += [ExpertFeatures(s, expert_transform) for s in experts]
        elif name == "embedding":
            groups += [EmbeddingFeatures(s, reduction, n_components, seed) for s in backbones]
        elif name == "probe":
            groups += [LinearProbeFeatures(s, seed) for s in backbones]
        elif name == "ugly-duckling":
            groups += [UglyDucklingFeatures(s) for s in backbones]
        elif name == "patient-context":
            groups += [PatientContextFeatures(s, "pca", n_components, seed) for s in backbones]
        elif name == "neighbours":
            groups += [NeighbourFeatures(s, seed) for s in backbones]
        elif name == "diagnosis":
            groups += [DiagnosisFeatures(s, seed) for s in backbones]
        elif name == "patient-scores":
            groups.append(PatientScoreFeatures())
    return groups


def build_features(
    groups: Sequence[FeatureGroup],
    data: StageData,
    fit_rows: np.ndarray,
    row_sets: Sequence[np.ndarray],
) -> list[pd.DataFrame]:
    """Fit every group on ``fit_rows`` only, then transform each of ``row_sets``."""
    for group in groups:
        group.fit(data, fit_rows)
    return [transform_all(groups, data, rows) for rows in row_sets]


def transform_all(
    groups: Sequence[FeatureGroup], data: StageData, rows: np.ndarray
) -> pd.DataFrame:
    """Every fitted group's columns for ``rows``; derived groups after the others."""
    built = pd.concat([g.transform(data, rows) for g in groups], axis=1)
    derived = [g.derive(data, rows, built) for g in groups if isinstance(g, DerivedGroup)]
    return pd.concat([built, *derived], axis=1)


def feature_group_of(column: str) -> str:
    """The --features group a column belongs to, from its namespace."""
    prefix, _, rest = column.partition("__")
    if prefix == "meta":
        return "metadata"
    if prefix in ("patient", "acq", "source", "expert"):
        return {"patient": "patient", "acq": "acquisition", "source": "source", "expert": "expert"}[
            prefix
        ]
    if rest == "probe":
        return "probe"
    if prefix == "patient_scores":
        return "patient-scores"
    if rest.startswith(("knn_", "dx_")):
        return "neighbours" if rest.startswith("knn_") else "diagnosis"
    if rest.startswith("pc_"):
        return "patient-context"
    return "ugly-duckling" if rest.startswith("ud_") else "embedding"
