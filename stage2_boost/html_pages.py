"""Self-contained HTML pages: ``report.html`` beside report.md, and ``predictions.html`` of
scored images. Thumbnails and plots are embedded as data URIs, the styles and the little
JavaScript (sortable tables, a filter box) are inline: the page opens offline, from an e-mail
attachment, and reads the same with JavaScript off. Jinja2 renders them with autoescaping on, so
no image or patient name can inject markup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from stage1_embed.common import atomic_write_text
from stage1_embed.pages import page_environment

from .compare import delta_text
from .features import feature_group_of
from .galleries import Card, Galleries
from .metrics import metric_table

MAX_PREDICTION_CARDS = 300  # thumbnails on predictions.html at most (about 5 KB each)
PLOTS = (("ROC curves", "roc.png"), ("AUC per fold", "fold_auc.png"),
         ("Feature importance", "importance.png"), ("AUC by subgroup", "auc_by_subgroup.png"),
         ("Reliability", "reliability.png"))  # fmt: skip


def _environment() -> jinja2.Environment:
    return page_environment("stage2_boost")


def write_report_html(folder: Path, metrics: dict[str, Any], importance: pd.DataFrame,
                      galleries: Galleries) -> Path:  # fmt: skip
    """``folder/report.html`` from the run's metrics, the PNGs already in ``folder`` and the
    galleries."""
    columns, rows = metric_table(metrics)
    versus = versus_lines(metrics.get("versus") or {})
    ablation = metrics.get("ablation") or {}
    page = _environment().get_template("report.html.j2").render(
        title=f"melanoma-stack report {metrics['run_id']}", m=metrics, columns=columns,
        metric_rows=rows, versus=versus, group_rows=_group_rows(importance, ablation),
        ablation=ablation.get("method") if ablation.get("groups") else "",
        plots=[(t, (folder / f).read_bytes()) for t, f in PLOTS if (folder / f).is_file()],
        g=galleries,
    )  # fmt: skip
    path = folder / "report.html"
    atomic_write_text(path, page)
    return path


def versus_lines(versus: dict[str, Any]) -> list[str]:
    """One sentence per earlier run paired with this one; one when the previous run is the best."""
    previous, best = versus.get("previous"), versus.get("best")
    if previous and best and previous["run"] == best["run"]:
        return [f"Against the previous run, also the best, on these images ({previous['run']}): "
                f"{previous['verdict']}."]  # fmt: skip
    return [f"Against the {role} run on these images ({v['run']}): {v['verdict']}."
            for role, v in versus.items()]  # fmt: skip


def write_predictions_html(
    out: Path, summary: Any, cards: list[Card], add_thumbnails: Callable[[list[Card]], None],
    labelled: str = "",
) -> Path:  # fmt: skip
    """``out/predictions.html``: the scored images grouped by patient, the patient with the
    highest probability first, up to MAX_PREDICTION_CARDS images (it says how many it left out;
    ``add_thumbnails`` fills in the thumbnails of those shown); unreadable images shown with
    their error."""
    by_patient: dict[str, list[Card]] = {}
    for c in cards:
        by_patient.setdefault(c.patient_id, []).append(c)
    for group in by_patient.values():
        group.sort(key=lambda c: -1.0 if c.probability is None else -c.probability)
    order = sorted(by_patient.items(), key=lambda kv: -max((c.probability or 0.0) for c in kv[1]))
    shown, patients = 0, list[tuple[str, list[Card]]]()
    for patient, group in order:
        if shown + len(group) > MAX_PREDICTION_CARDS and patients:
            break
        patients.append((patient, group))
        shown += len(group)
    add_thumbnails([c for _, group in patients for c in group])
    page = _environment().get_template("predictions.html.j2").render(
        title=f"melanoma-stack predictions ({summary.model_run})", s=summary, patients=patients,
        shown=shown, left_out=len(cards) - shown, labelled=labelled,
    )  # fmt: skip
    path = Path(out) / "predictions.html"
    atomic_write_text(path, page)
    return path


def _group_rows(importance: pd.DataFrame, ablation: dict[str, Any]) -> list[dict[str, Any]]:
    """Per feature group: its share of the boosters' gain, and what leaving it out cost."""
    shares: dict[str, float] = {}
    if not importance.empty:
        share = importance["gain"] / importance.groupby("model")["gain"].transform("sum")
        groups = importance["feature"].map(feature_group_of)
        shares = (share.groupby(groups).sum() / importance["model"].nunique()).to_dict()
    deltas = {row["group"]: row for row in ablation.get("groups") or []}
    for joint in (g for g in deltas if "+" in g):  # a set left out together: its members' share
        shares[joint] = sum(shares.get(member, 0.0) for member in joint.split("+"))
    rows = []
    names = sorted(set(shares) | set(deltas), key=lambda g: ("+" in g, -shares.get(g, 0.0)))
    for group in names:
        row = deltas.get(group)
        delta = pauc = ""
        if row is not None:
            delta = delta_text(row["delta_auc"], row["delta_auc_ci95"])
            if row.get("delta_pauc80") is not None:
                pauc = delta_text(row["delta_pauc80"], row["delta_pauc80_ci95"])
        rows.append({"group": group, "share": shares.get(group, 0.0), "delta_auc": delta,
                     "delta_value": row["delta_auc"] if row else "", "delta_pauc": pauc})  # fmt: skip
    return rows
