"""Feature groups by name, and building a fold's feature matrices from them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    once: dict[str, Callable[[], FeatureGroup]] = {
        "metadata": MetadataFeatures, "patient": PatientFeatures, "source": SourceFeatures,
        "acquisition": AcquisitionFeatures, "patient-scores": PatientScoreFeatures,
    }  # fmt: skip
    per_backbone = {
        "embedding": lambda s: EmbeddingFeatures(s, reduction, n_components, seed),
        "probe": lambda s: LinearProbeFeatures(s, seed),
        "ugly-duckling": UglyDucklingFeatures,
        "patient-context": lambda s: PatientContextFeatures(s, "pca", n_components, seed),
        "neighbours": lambda s: NeighbourFeatures(s, seed),
        "diagnosis": lambda s: DiagnosisFeatures(s, seed),
    }
    groups: list[FeatureGroup] = []
    for name in names:
        if name in once:
            groups.append(once[name]())
        elif name == "expert":
            groups += [ExpertFeatures(s, expert_transform) for s in experts]
        else:
            groups += [per_backbone[name](s) for s in backbones]
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


_PREFIX_GROUPS = {"meta": "metadata", "patient": "patient", "acq": "acquisition", "source": "source",
                  "expert": "expert", "patient_scores": "patient-scores"}  # fmt: skip
# per-backbone columns (<slug>__<name>) by how the name starts; the rest are embedding columns
_NAME_GROUPS = (("probe", "probe"), ("knn_", "neighbours"), ("dx_", "diagnosis"),
                ("pc_", "patient-context"), ("ud_", "ugly-duckling"))  # fmt: skip


def feature_group_of(column: str) -> str:
    """The --features group a column belongs to, from its namespace."""
    prefix, _, rest = column.partition("__")
    if prefix in _PREFIX_GROUPS:
        return _PREFIX_GROUPS[prefix]
    return next((group for start, group in _NAME_GROUPS if rest.startswith(start)), "embedding")
