"""The patient bootstrap's vectorised AUCs against scikit-learn's, replicate by replicate."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from stage2_boost.metrics import bootstrap_auc_ci, weighted_aucs


def test_weighted_aucs_equal_sklearn_with_ties_and_zero_weights() -> None:
    rng = np.random.default_rng(0)
    target = rng.random(400) < 0.1
    score = np.round(rng.normal(size=400) + target, 1)  # many ties
    weights = rng.integers(0, 3, (25, 400))
    weights[3, target] = 0  # a replicate without positives
    got = weighted_aucs(target, score, weights)
    assert np.isnan(got[3])
    for k in (0, 1, 7, 24):
        keep = weights[k] > 0
        want = roc_auc_score(target[keep], score[keep], sample_weight=weights[k][keep])
        assert got[k] == np.float64(want) or abs(got[k] - want) < 1e-12


def test_bootstrap_interval_is_deterministic_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 150, 900)
    target = rng.random(900) < 0.08
    score = rng.normal(size=900) + 1.5 * target
    low, high = bootstrap_auc_ci(target, score, patients, 300, seed=5)
    assert low < roc_auc_score(target, score) < high
    assert (low, high) == bootstrap_auc_ci(target, score, patients, 300, seed=5)
    assert (low, high) != bootstrap_auc_ci(target, score, patients, 300, seed=6)


def test_group_weights_equal_the_same_weights_per_row() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 40, 500)
    target = rng.random(500) < 0.1
    score = np.round(rng.normal(size=500) + target, 1)
    per_group = rng.integers(0, 4, (30, 40))
    grouped = weighted_aucs(target, score, per_group, groups)
    assert np.array_equal(
        grouped, weighted_aucs(target, score, per_group[:, groups]), equal_nan=True
    )
    as_float = weighted_aucs(target, score, per_group[:, groups].astype(float))
    assert np.allclose(grouped, as_float, equal_nan=True, rtol=0, atol=1e-12)
