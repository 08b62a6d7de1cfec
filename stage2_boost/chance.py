"""Saying when a result is indistinguishable from chance, in the same words everywhere (the run
summary, report.md/html, ``runs``, ``compare``, ``--ablate`` and scoring). Imports nothing heavy:
``runs`` uses it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NO_EVIDENCE = "no evidence that this model ranks lesions better than chance"


def chance_text(auc_ci95: Sequence[float], calibration: dict[str, Any] | None = None) -> str | None:
    """Plain words when a result is indistinguishable from chance (None when it is not): the
    AUC's 95% interval contains 0.5, or the calibrated probability's Brier score does not beat
    predicting the base rate for every image."""
    low, high = float(auc_ci95[0]), float(auc_ci95[1])
    if low <= 0.5 <= high:
        return f"{NO_EVIDENCE}: its AUC interval [{low:.3f}, {high:.3f}] contains 0.5"
    if high < 0.5:
        return f"{NO_EVIDENCE}: its AUC interval [{low:.3f}, {high:.3f}] is below 0.5"
    cal = calibration or {}
    if cal.get("brier") is not None and cal["brier"] >= cal["brier_base_rate"]:
        return (f"its probabilities are no better than the base rate's: Brier {cal['brier']:.4f} "
                f"against {cal['brier_base_rate']:.4f} for the base rate alone")  # fmt: skip
    return None
