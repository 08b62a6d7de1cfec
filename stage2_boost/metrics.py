"""AUC, the ISIC 2024 challenge's clinical metrics, and patient-bootstrap intervals for them.

Every metric is read off one ROC curve per bootstrap replicate: the scores are sorted once into
tie blocks (a run of blocks without a positive merged into one: the curve is flat there), a
sparse matrix counts each patient's positive and negative images per block, and one sparse
product per chunk of replicates gives every replicate's weighted counts per block, summed
cumulatively into its curve: 1,000 replicates of 33,000 images take about 0.1 s instead of
minutes of ``roc_curve`` calls.

scikit-learn has neither DeLong's test nor AUC intervals (an open feature request), and DeLong's
test assumes independent images while ours cluster in patients: the patient bootstrap is the
interval to read; :func:`delong_paired_p` is printed beside it, labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

_CHUNK_CELLS = 4_000_000  # replicates x rows held in memory at once (32 MB of float64)
_EPS = 1e-9

# name -> (what it is, whether lower is better); SHORT: the terminal summary's names
SHORT = {"auc": "AUC", "pauc80": "pAUC80", "sens_at_spec90": "sens@spec90",
         "sens_at_spec95": "sens@spec95", "spec_at_sens95": "spec@sens95",
         "review_at_sens80": "reviews/melanoma@sens80", "review_at_sens90": "@sens90"}  # fmt: skip
METRICS: dict[str, tuple[str, bool]] = {
    "auc": ("ROC AUC", False),
    "pauc80": ("pAUC above 80% sensitivity (ISIC 2024, range 0-0.2)", False),
    "sens_at_spec90": ("sensitivity at 90% specificity", False),
    "sens_at_spec95": ("sensitivity at 95% specificity", False),
    "spec_at_sens95": ("specificity at 95% sensitivity", False),
    "review_at_sens80": ("lesions reviewed per melanoma found at 80% sensitivity", True),
    "review_at_sens90": ("lesions reviewed per melanoma found at 90% sensitivity", True),
}
# A metric read at an operating point needs at least 2 images of the class beyond that point
# (e.g. 95% sensitivity: 2 / 0.05 = 40 malignant images), else its value is one image's luck.
_NEEDS = {"auc": (1, 1), "pauc80": (10, 1), "sens_at_spec90": (10, 20),
          "sens_at_spec95": (10, 40), "spec_at_sens95": (40, 1), "review_at_sens80": (10, 1),
          "review_at_sens90": (20, 1)}  # fmt: skip


def auc(target: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(target, score))


def unsupported(metric: str, n_pos: int, n_neg: int) -> str | None:
    """Why ``metric`` is not reported on data with these class counts (None: it is)."""
    pos, neg = _NEEDS[metric]
    if n_pos < pos:
        return f"needs at least {pos} malignant images, these data have {n_pos}"
    if n_neg < neg:
        return f"needs at least {neg} benign images, these data have {n_neg}"
    return None


def curve_metrics(
    target: np.ndarray, score: np.ndarray, weights: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` under each row of ``weights`` (NaN where a replicate has
    no positive or no negative weight). ``weights``: replicates x rows; or, with ``groups`` (a
    group index per row), replicates x groups, row i weighing ``weights[:, groups[i]]`` (a patient
    bootstrap's multiplicities, expanded to rows one chunk of replicates at a time).

    The ROC curve has one point per distinct score (ties move together, so the trapezoid counts a
    tie one half, as scikit-learn's weighted ``roc_auc_score`` does). pAUC80 is the area between
    the curve and the line TPR = 0.8, which equals the ISIC 2024 scorer's partial AUC of the
    label- and score-flipped curve up to FPR 0.2. Operating points are the curve's own points,
    never interpolated ones."""
    target = np.asarray(target, bool)
    score = np.asarray(score, np.float64)
    groups = np.arange(len(score)) if groups is None else np.asarray(groups)
    order = np.argsort(-score, kind="stable")
    ordered, positive = score[order], target[order]
    block = np.r_[0, np.cumsum(ordered[1:] != ordered[:-1])]  # tie block of each sorted row
    # A run of blocks holding only negatives is one horizontal stretch of every replicate's curve:
    # merged into one point, which changes no area and no operating point the metrics read.
    has_positive = np.zeros(int(block[-1]) + 1, bool)
    has_positive[block[positive]] = True
    starts = has_positive | np.r_[True, has_positive[:-1]]
    block = (np.cumsum(starts) - 1)[block]
    n_blocks, n_groups = int(block[-1]) + 1, int(weights.shape[1])
    # how many positive / negative rows of each group fall in each tie block (sparse: a row each)
    counts = [
        sparse.csr_matrix((np.ones(int(mask.sum())), (block[mask], groups[order][mask])),
                          shape=(n_blocks, n_groups))
        for mask in (positive, ~positive)
    ]  # fmt: skip
    out = {name: np.empty(len(weights)) for name in METRICS}
    step = max(1, _CHUNK_CELLS // n_blocks)
    for begin in range(0, len(weights), step):
        w = np.asarray(weights[begin : begin + step], np.float64).T  # groups x replicates
        zero = np.zeros((w.shape[1], 1))
        tp, fp = (np.hstack([zero, np.cumsum((c @ w).T, axis=1)]) for c in counts)
        for name, values in _from_curve(tp, fp).items():
            out[name][begin : begin + step] = values
    return out


def _from_curve(tp: np.ndarray, fp: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics from cumulative true/false positive weights (replicates x curve points)."""
    total_pos, total_neg = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / total_pos, fp / total_neg
        width = np.diff(fpr, axis=1)
        low, high = tpr[:, :-1], tpr[:, 1:]
        above_low, above_high = low - 0.8, high - 0.8
        crossing = width * np.clip(above_high, 0, None) ** 2 / (2 * (above_high - above_low))
        pauc = np.where(above_low >= 0, width * (above_low + above_high) / 2,
                        np.where(above_high > 0, crossing, 0.0))  # fmt: skip
        values = {
            "auc": (width * (low + high) / 2).sum(axis=1),
            "pauc80": pauc.sum(axis=1),
            "sens_at_spec90": np.where(fpr <= 0.10 + _EPS, tpr, 0.0).max(axis=1),
            "sens_at_spec95": np.where(fpr <= 0.05 + _EPS, tpr, 0.0).max(axis=1),
            "spec_at_sens95": 1 - np.where(tpr >= 0.95 - _EPS, fpr, 1.0).min(axis=1),
        }
        for level in (80, 90):
            first = np.argmax(tpr >= level / 100 - _EPS, axis=1)[:, None]
            found = np.take_along_axis(tp, first, axis=1)[:, 0]
            flagged = found + np.take_along_axis(fp, first, axis=1)[:, 0]
            values[f"review_at_sens{level}"] = flagged / found
    invalid = (total_pos[:, 0] == 0) | (total_neg[:, 0] == 0)
    for array in values.values():
        array[invalid] = np.nan
    return values


def point_metrics(target: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` on the data as they are (all weights one)."""
    values = curve_metrics(target, score, np.ones((1, len(score)), np.int64))
    return {name: float(v[0]) for name, v in values.items()}


def patient_draws(patients: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A patient bootstrap: per replicate how often each patient is drawn, and each row's patient
    index. The same (seed, patients) give the same draws, so two runs' scores resampled with them
    are paired."""
    _, codes = np.unique(patients, return_inverse=True)
    n_patients = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)
         for _ in range(n_boot)]
    )  # fmt: skip
    return draws, codes


def percentile_interval(values: np.ndarray) -> list[float]:
    """The 95% percentile interval, replicates without a value (no malignant or no benign image
    drawn) left out: :func:`metric_summary` reports how many."""
    if np.isnan(values).all():
        return [float("nan"), float("nan")]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def metric_summary(
    target: np.ndarray, score: np.ndarray, patients: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """``{metric: value, metric_ci95: [low, high]}`` with patient-bootstrap 95% intervals; a
    metric the data cannot support is None, with the reason under ``not_reported``."""
    target = np.asarray(target, bool)
    draws, codes = patient_draws(patients, n_boot, seed)
    point = point_metrics(target, score)
    replicates = curve_metrics(target, score, draws, codes)
    summary: dict[str, Any] = {"not_reported": {},
                               "bootstrap_dropped": int(np.isnan(replicates["auc"]).sum())}  # fmt: skip
    for name in METRICS:
        reason = unsupported(name, int(target.sum()), int((~target).sum()))
        if reason:
            summary[name], summary[f"{name}_ci95"] = None, None
            summary["not_reported"][name] = reason
        else:
            summary[name], summary[f"{name}_ci95"] = (
                point[name],
                percentile_interval(replicates[name]),
            )
    return summary


def paired_differences(
    target: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, patients: np.ndarray,
    n_boot: int = 1000, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """B minus A for every metric, with a paired patient-bootstrap 95% interval: each replicate
    resamples the same patients for both scorings, so what the two share cancels."""
    target = np.asarray(target, bool)
    draws, codes = patient_draws(patients, n_boot, seed)
    a, b = point_metrics(target, score_a), point_metrics(target, score_b)
    rep_a = curve_metrics(target, score_a, draws, codes)
    rep_b = curve_metrics(target, score_b, draws, codes)
    out: dict[str, Any] = {"not_reported": {}}
    for name in METRICS:
        reason = unsupported(name, int(target.sum()), int((~target).sum()))
        if reason:
            out["not_reported"][name] = reason
            continue
        out[f"a_{name}"], out[f"b_{name}"] = a[name], b[name]
        out[f"delta_{name}"] = b[name] - a[name]
        out[f"delta_{name}_ci95"] = percentile_interval(rep_b[name] - rep_a[name])
    out["a_auc_ci95"], out["b_auc_ci95"] = (
        percentile_interval(rep_a["auc"]),
        percentile_interval(rep_b["auc"]),
    )
    return out


def bootstrap_auc_ci(
    target: np.ndarray, score: np.ndarray, patients: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the AUC when whole patients are resampled with replacement."""
    draws, codes = patient_draws(patients, n_boot, seed)
    low, high = percentile_interval(curve_metrics(target, score, draws, codes)["auc"])
    return low, high


def delong_paired_p(target: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> float:
    """Two-sided p-value of DeLong's test that two correlated AUCs are equal (DeLong et al. 1988,
    with Sun & Xu's midrank computation). It treats images as independent, which patients are
    not: read it beside the paired patient bootstrap, not instead of it."""
    positive = np.asarray(target, bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return float("nan")
    aucs, per_pos, per_neg = [], [], []
    for score in (np.asarray(score_a, float), np.asarray(score_b, float)):
        pos, neg = score[positive], score[~positive]
        joint = rankdata(np.r_[pos, neg])
        per_pos.append((joint[:m] - rankdata(pos)) / n)  # share of negatives below each positive
        per_neg.append(
            1 - (joint[m:] - rankdata(neg)) / m
        )  # share of positives above each negative
        aucs.append(float(per_pos[-1].mean()))
    cov_pos, cov_neg = np.cov(per_pos), np.cov(per_neg)
    contrast = np.array([-1.0, 1.0])
    variance = contrast @ cov_pos @ contrast / m + contrast @ cov_neg @ contrast / n
    delta = aucs[1] - aucs[0]
    if variance <= 0:
        return 1.0 if delta == 0 else 0.0
    return float(2 * norm.sf(abs(delta) / np.sqrt(variance)))


def interval_text(value: float, ci95: Sequence[float]) -> str:
    """``0.797 [0.730, 0.856]``: a metric with its interval, as the summary and reports show it."""
    return f"{value:.3f} [{ci95[0]:.3f}, {ci95[1]:.3f}]"


def metric_table(metrics: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """A run's metrics as a table: the columns (blend, then each model) and per metric its label
    and cells (``not reported`` where the data could not support it)."""
    entries = {"blend": metrics, **metrics["models"]}
    rows = []
    for name, (label, _) in METRICS.items():
        cells = [
            "not reported" if e.get(f"oof_{name}") is None
            else interval_text(e[f"oof_{name}"], e[f"oof_{name}_ci95"])
            for e in entries.values()
        ]  # fmt: skip
        rows.append((label, cells))
    return list(entries), rows
