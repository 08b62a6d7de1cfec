"""AUC and patient-bootstrap confidence intervals (the blend and calibration: model/calibration.py)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(target: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(target, score))


def bootstrap_auc_ci(
    target: np.ndarray, score: np.ndarray, patients: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the AUC when whole patients are resampled with replacement."""
    codes, _ = _factorize(patients)
    n_patients = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)[codes]
        keep = weights > 0
        if len(np.unique(target[keep])) < 2:
            continue
        values.append(roc_auc_score(target[keep], score[keep], sample_weight=weights[keep]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values, return_inverse=True)
    return codes, uniques
