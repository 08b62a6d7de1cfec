"""The metrics against direct computations: scikit-learn's AUC per replicate, the ISIC 2024
scorer's partial AUC, operating points read off ``roc_curve``, DeLong from its pairwise definition,
and the paired bootstrap replicate by replicate."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as trapezoid_area
from sklearn.metrics import roc_auc_score, roc_curve

from stage2_boost.metrics import (
    bootstrap_auc_ci,
    curve_metrics,
    delong_paired_p,
    metric_summary,
    paired_differences,
    point_metrics,
)
from tests.stage2.helpers import direct_paired_interval


def isic2024_pauc(target: np.ndarray, score: np.ndarray, min_tpr: float = 0.80) -> float:
    """The ISIC 2024 challenge's scorer, as published: flip labels and scores, then the area
    under the flipped ROC curve up to FPR 1 - min_tpr (range 0 to 0.2)."""
    flipped_target, flipped_score = 1 - np.asarray(target), -np.asarray(score)
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = roc_curve(flipped_target, flipped_score)
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr = np.append(
        tpr[:stop], np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    )
    fpr = np.append(fpr[:stop], max_fpr)
    return float(trapezoid_area(fpr, tpr))


def test_pauc80_equals_the_isic_2024_scorer_on_a_hand_made_roc() -> None:
    # 5 melanomas, 5 nevi; the curve crosses TPR 0.8 inside a segment and has a tie block
    target = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    score = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.6, 0.4, 0.3, 0.2, 0.1])
    # ROC points (fpr, tpr): (0,0) (0,.2) (0,.4) (.2,.4) (.2,.6) (.4,.8) (.6,.8) (.8,.8) (.8,1) (1,1)
    # area above TPR 0.8: the segment to (.8,1) is vertical, then 0.2 wide at height 0.2
    assert abs(point_metrics(target, score)["pauc80"] - 0.2 * 0.2) < 1e-12
    assert abs(isic2024_pauc(target, score) - 0.04) < 1e-12
    rng = np.random.default_rng(3)
    for _ in range(20):
        target = rng.random(300) < 0.15
        score = np.round(rng.normal(size=300) + 1.2 * target, 1)  # ties
        assert abs(point_metrics(target, score)["pauc80"] - isic2024_pauc(target, score)) < 1e-12


def test_operating_points_equal_a_direct_reading_of_roc_curve() -> None:
    rng = np.random.default_rng(4)
    target = rng.random(2000) < 0.05
    score = np.round(rng.normal(size=2000) + 1.5 * target, 2)
    fpr, tpr, thresholds = roc_curve(target, score, drop_intermediate=False)
    got = point_metrics(target, score)
    assert got["sens_at_spec90"] == tpr[fpr <= 0.10].max()
    assert got["sens_at_spec95"] == tpr[fpr <= 0.05].max()
    assert abs(got["spec_at_sens95"] - (1 - fpr[tpr >= 0.95].min())) < 1e-12
    for level in (80, 90):
        first = np.argmax(tpr >= level / 100)
        flagged = (score >= thresholds[first]).sum()
        found = (target & (score >= thresholds[first])).sum()
        assert abs(got[f"review_at_sens{level}"] - flagged / found) < 1e-12
    assert abs(got["auc"] - roc_auc_score(target, score)) < 1e-12


def test_replicate_aucs_equal_sklearn_with_ties_and_zero_weights() -> None:
    rng = np.random.default_rng(0)
    target = rng.random(400) < 0.1
    score = np.round(rng.normal(size=400) + target, 1)  # many ties
    weights = rng.integers(0, 3, (25, 400))
    weights[3, target] = 0  # a replicate without positives
    got = curve_metrics(target, score, weights)
    assert np.isnan(got["auc"][3]) and np.isnan(got["pauc80"][3])
    for k in (0, 1, 7, 24):
        keep = weights[k] > 0
        want = roc_auc_score(target[keep], score[keep], sample_weight=weights[k][keep])
        assert abs(got["auc"][k] - want) < 1e-12


def test_group_weights_equal_the_same_weights_per_row() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 40, 500)
    target = rng.random(500) < 0.1
    score = np.round(rng.normal(size=500) + target, 1)
    per_group = rng.integers(0, 4, (30, 40))
    grouped = curve_metrics(target, score, per_group, groups)
    per_row = curve_metrics(target, score, per_group[:, groups])
    for name, values in grouped.items():
        assert np.allclose(values, per_row[name], equal_nan=True, rtol=0, atol=1e-12), name


def test_bootstrap_interval_is_deterministic_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 150, 900)
    target = rng.random(900) < 0.08
    score = rng.normal(size=900) + 1.5 * target
    low, high = bootstrap_auc_ci(target, score, patients, 300, seed=5)
    assert low < roc_auc_score(target, score) < high
    assert (low, high) == bootstrap_auc_ci(target, score, patients, 300, seed=5)
    assert (low, high) != bootstrap_auc_ci(target, score, patients, 300, seed=6)


def test_metrics_the_data_cannot_support_are_not_reported() -> None:
    rng = np.random.default_rng(5)
    patients = rng.integers(0, 100, 600)
    target = np.zeros(600, bool)
    target[rng.choice(600, 27, replace=False)] = True  # as many melanomas as the shared JPEGs
    summary = metric_summary(target, rng.normal(size=600) + target, patients, 200, seed=1)
    assert summary["spec_at_sens95"] is None and summary["review_at_sens90"] is not None
    assert (
        "at least 40 malignant images, these data have 27"
        in summary["not_reported"]["spec_at_sens95"]
    )
    low, high = summary["pauc80_ci95"]
    assert 0 <= low <= summary["pauc80"] <= high <= 0.2


def test_paired_interval_equals_a_direct_per_replicate_computation() -> None:
    rng = np.random.default_rng(6)
    patients = rng.integers(0, 120, 1500)
    target = rng.random(1500) < 0.08
    score_a = rng.normal(size=1500) + 1.0 * target
    score_b = score_a + 0.6 * target + rng.normal(0, 0.3, 1500)  # B is better by a known margin
    result = paired_differences(target, score_a, score_b, patients, 200, seed=9)
    low, high = direct_paired_interval(target, score_a, score_b, patients, 200, seed=9)
    assert np.allclose(result["delta_auc_ci95"], [low, high], rtol=0, atol=1e-12)
    want = roc_auc_score(target, score_b) - roc_auc_score(target, score_a)
    assert abs(result["delta_auc"] - want) < 1e-12
    assert 0 < low < want < high
    # the paired interval is narrower than either run's own
    own_low, own_high = bootstrap_auc_ci(target, score_a, patients, 200, seed=9)
    assert high - low < own_high - own_low


def test_delong_matches_its_pairwise_definition() -> None:
    rng = np.random.default_rng(7)
    target = rng.random(300) < 0.2
    score_a = np.round(rng.normal(size=300) + target, 1)
    score_b = np.round(score_a + rng.normal(0, 0.5, 300) + 0.3 * target, 1)
    pos, neg = target, ~target
    components = []
    for score in (score_a, score_b):
        psi = (score[pos][:, None] > score[neg][None, :]) + 0.5 * (
            score[pos][:, None] == score[neg][None, :]
        )
        components.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    v10 = np.cov([components[0][0], components[1][0]])
    v01 = np.cov([components[0][1], components[1][1]])
    var = (v10[0, 0] + v10[1, 1] - 2 * v10[0, 1]) / pos.sum() + (
        v01[0, 0] + v01[1, 1] - 2 * v01[0, 1]
    ) / neg.sum()
    from scipy.stats import norm

    want = 2 * norm.sf(abs(components[1][2] - components[0][2]) / np.sqrt(var))
    assert abs(delong_paired_p(target, score_a, score_b) - want) < 1e-10
    assert delong_paired_p(target, score_a, score_a) == 1.0


def test_replicates_without_both_classes_are_counted_and_left_out() -> None:
    rng = np.random.default_rng(0)
    target = np.zeros(60, bool)
    target[[3, 40]] = True  # two malignant images of two of 30 patients: some draws have none
    patients = np.repeat(np.arange(30), 2).astype(str)
    summary = metric_summary(target, rng.normal(size=60), patients, n_boot=200, seed=1)
    assert summary["bootstrap_dropped"] > 0 and np.isfinite(summary["auc_ci95"]).all()
