"""The run report: ROC curves, per-fold AUC, feature importance, AUC by site and age band."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from stage1_embed.common import atomic_path, atomic_write_text

from .cache import ContentCache, cached_png, content_key
from .compare import delta_text
from .data import StageData
from .features import feature_group_of
from .galleries import Galleries
from .html_pages import write_report_html
from .metrics import metric_table
from .model.calibration import ECE_BINS

GROUP_COLOURS = {"metadata": "#1f77b4", "patient": "#ff7f0e", "embedding": "#2ca02c",
                 "ugly-duckling": "#d62728", "acquisition": "#9467bd", "probe": "#8c564b",
                 "source": "#7f7f7f", "expert": "#e377c2", "patient-context": "#bcbd22",
                 "neighbours": "#17becf", "diagnosis": "#aec7e8", "patient-scores": "#ffbb78"}  # fmt: skip
AGE_BANDS = [0, 30, 45, 60, 75, 200]
AGE_LABELS = ["<30", "30-44", "45-59", "60-74", "75+"]
MIN_GROUP = 20  # subgroups smaller than this, or with one class, get no AUC


def write_report(
    out: Path, metrics: dict[str, Any], oof: pd.DataFrame, importance: pd.DataFrame,
    data: StageData, cache: ContentCache | None = None, galleries: Galleries | None = None,
) -> Path:  # fmt: skip
    """Write PNG plots, ``report.md`` and (with ``galleries``) the self-contained
    ``report.html`` under ``<out>/report``.

    Each figure is a function of exactly the data it shows: drawn once per content (the data, the
    code, matplotlib's version) and then copied from the stage 2 cache (a rerun whose refits were
    reused draws none: ~0.6 s saved)."""
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    models = [*metrics["models"], "blend"]
    subgroups = _subgroup_table(oof, data)
    cal = metrics["calibration"]
    figures = _Figures(folder, cache or ContentCache(None))
    figures.draw("roc.png", _roc_plot, oof[["target", *models]],
                 {m: _ci(metrics, m) for m in models}, metrics["n_train"], metrics["n_pos"])  # fmt: skip
    figures.draw("fold_auc.png", _fold_plot, _fold_aucs(metrics))
    figures.draw("importance.png", _importance_plot, importance)
    figures.draw("auc_by_subgroup.png", _subgroup_plot, subgroups)
    figures.draw("reliability.png", _reliability_plot, oof[["target", "blend", "probability"]],
                 cal["brier"], cal["ece"])  # fmt: skip
    atomic_write_text(folder / "report.md", _markdown(metrics, subgroups))
    if galleries is not None:
        write_report_html(folder, metrics, importance, galleries)
    return folder


class _Figures:
    """Each PNG of the report comes from the cache, keyed by exactly what it shows."""

    def __init__(self, folder: Path, cache: ContentCache) -> None:
        self.folder, self.cache = folder, cache

    def draw(self, name: str, plot: Callable[..., plt.Figure], *inputs: Any) -> None:
        key = content_key("figure", name, *inputs)
        png = cached_png(self.cache, key, lambda: _png(plot(*inputs)))
        with atomic_path(self.folder / name) as tmp:
            tmp.write_bytes(png)


def _reliability_plot(oof: pd.DataFrame, brier_score: float, ece: float) -> plt.Figure:
    """Observed malignant rate against the predicted probability in equal-count bins (with 2%
    positives, fixed-width bins would put nearly every image in the first one)."""
    target = oof["target"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    for column, label in (
        ("blend", "uncalibrated blend"),
        ("probability", "calibrated (cross-fitted)"),
    ):
        observed, predicted = calibration_curve(
            target, oof[column].to_numpy(dtype=float), n_bins=ECE_BINS, strategy="quantile"
        )
        ax.plot(predicted, observed, "o-", label=label)
    top = float(max(oof["probability"].max(), oof["blend"].max(), target.mean() * 2))
    ax.plot([0, top], [0, top], c="grey", ls=":", label="perfect")
    ax.set(xlabel="predicted probability (bin mean)",
           ylabel="observed malignant rate", title=f"Reliability: Brier {brier_score:.4f}, ECE {ece:.4f}")  # fmt: skip
    ax.legend(fontsize=8)
    return fig


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _ci(metrics: dict[str, Any], model: str) -> tuple[float, float, float]:
    entry = metrics if model == "blend" else metrics["models"][model]
    low, high = entry["oof_auc_ci95"]
    return entry["oof_auc"], low, high


def _fold_aucs(metrics: dict[str, Any]) -> dict[str, list[float]]:
    """Per-fold AUCs of each model, then of the blend."""
    per_model = {name: m["fold_aucs"] for name, m in metrics["models"].items()}
    return {**per_model, "blend": metrics["fold_aucs"]}


def _roc_plot(
    oof: pd.DataFrame, legend: dict[str, tuple[float, float, float]], n_train: int, n_pos: int
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    for model, (value, low, high) in legend.items():
        fpr, tpr, _ = roc_curve(oof["target"], oof[model])
        ax.plot(
            fpr,
            tpr,
            lw=2.2 if model == "blend" else 1.3,
            label=f"{model}: {value:.3f} [{low:.3f}, {high:.3f}]",
        )
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"Out-of-fold ROC ({n_train} images, {n_pos} malignant)")  # fmt: skip
    ax.legend(loc="lower right", title="AUC [95% CI, patient bootstrap]", fontsize=8)
    return fig


def _fold_plot(fold_aucs: dict[str, list[float]]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    width = 0.8 / len(fold_aucs)
    n_folds = len(fold_aucs["blend"])
    for i, (name, values) in enumerate(fold_aucs.items()):
        ax.bar(np.arange(len(values)) + i * width, values, width, label=name)
    # the axis starts at 0 so that every fold has a bar, those below chance too
    ax.set(xlabel="fold", ylabel="AUC", title="AUC per evaluation fold", ylim=(0.0, 1.05))
    ax.set_xticks(
        np.arange(n_folds) + width * (len(fold_aucs) - 1) / 2, [str(k) for k in range(n_folds)]
    )
    ax.axhline(0.5, c="black", ls="--", lw=1, label="chance (0.5)")
    ax.legend(fontsize=8)
    return fig


def _importance_plot(importance: pd.DataFrame, top: int = 25) -> plt.Figure:
    if importance.empty:
        fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
        ax.text(0.5, 0.5, "no feature importances (no model split on any feature)", ha="center")
        return fig
    shares = importance.assign(
        share=importance["gain"] / importance.groupby("model")["gain"].transform("sum")
    )
    mean = shares.groupby("feature")["share"].mean().sort_values().tail(top)
    colours = [GROUP_COLOURS[feature_group_of(f)] for f in mean.index]
    fig, ax = plt.subplots(figsize=(6.5, 0.25 * len(mean) + 1.2), layout="constrained")
    ax.barh(mean.index, mean.to_numpy(), color=colours)
    handles = [Patch(color=colour, label=group) for group, colour in GROUP_COLOURS.items()]
    ax.set(
        xlabel="share of total gain (mean over models)", title=f"Top {len(mean)} features by gain"
    )
    ax.set_xlim(left=0)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return fig


def _subgroup_table(oof: pd.DataFrame, data: StageData) -> pd.DataFrame:
    meta = data.frame.set_index("image_name").loc[oof["image_name"]]
    site = meta["anatom_site_general_challenge"].astype("string").fillna("(missing)").to_numpy()
    band = (
        pd.cut(meta["age_approx"].astype(float), AGE_BANDS, right=False, labels=AGE_LABELS)
        .astype("string")
        .fillna("(missing)")
        .to_numpy()
    )
    rows = []
    ages = [label for label in [*AGE_LABELS, "(missing)"] if label in set(band)]
    for kind, labels, order in (("site", site, sorted(set(site))), ("age band", band, ages)):
        for label in order:
            mask = labels == label
            target, score = oof["target"].to_numpy()[mask], oof["blend"].to_numpy()[mask]
            ok = mask.sum() >= MIN_GROUP and 0 < target.sum() < mask.sum()
            rows.append({"kind": kind, "group": label, "n": int(mask.sum()), "n_pos": int(target.sum()),
                         "auc": roc_auc_score(target, score) if ok else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def _subgroup_plot(table: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, kind in zip(axes, ("site", "age band"), strict=True):
        part = table[table["kind"] == kind]
        ax.bar(
            part["group"],
            part["auc"].fillna(0),
            color=np.where(part["auc"].isna(), "lightgrey", "#4c72b0"),
        )
        for x, (_, row) in enumerate(part.iterrows()):
            ax.text(
                x,
                0.02 if np.isnan(row["auc"]) else row["auc"] + 0.01,
                f"n={row['n']}\n+{row['n_pos']}",
                ha="center",
                fontsize=7,
            )
        ax.set(title=f"Blend AUC by {kind} (grey: too few to score)", ylim=(0, 1.1), ylabel="AUC")
        ax.tick_params(axis="x", rotation=35, labelsize=8)
        ax.axhline(0.5, c="grey", ls=":")
    return fig


def _markdown(metrics: dict[str, Any], subgroups: pd.DataFrame) -> str:
    lines = [
        f"# Stage 2 report — run {metrics['run_id']}", "",
        f"Dataset **{metrics['dataset']}**: {metrics['n_train']} training images, {metrics['n_pos']} malignant, "
        f"{metrics['n_patients']} patients; {metrics['n_test']} test images.", "",
        f"**OOF AUC (blend): {metrics['oof_auc']:.4f}** (95% CI {metrics['oof_auc_ci95'][0]:.4f}–"
        f"{metrics['oof_auc_ci95'][1]:.4f}, patient bootstrap), measured by refitting the chosen "
        f"parameters on a fold split (seed {metrics['folds']['eval_seed']}) other than the one they were "
        f"tuned on (seed {metrics['folds']['tuning_seed']}). The best tuning CV AUC, which selection "
        f"flatters, was {_fmt(metrics['tuning_auc'])}.", "",
        *([f"**Chance level: {metrics['chance']}.**", ""] if metrics.get("chance") else []),
        *[f"Colours: {note}." for note in metrics.get("colours") or []], "",
        "| model | OOF AUC | 95% CI | tuning AUC | rounds | trials in study | study |", "| --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for name, m in metrics["models"].items():
        tuning = f"{m['tuning_auc']:.4f}" if m["tuning_auc"] is not None else "untuned"
        lines.append(f"| {name} | {m['oof_auc']:.4f} | {m['oof_auc_ci95'][0]:.4f}–{m['oof_auc_ci95'][1]:.4f} | "
                     f"{tuning} | {m['n_rounds']} | {m['n_trials_in_study']} | `{m['study']}` |")  # fmt: skip
    extra = metrics.get("extra") or {}
    if extra.get("n_rows"):
        parts = ", ".join(f"{name} ({s['n_rows']} images, {s['n_pos']} malignant)"
                          for name, s in extra["sources"].items())  # fmt: skip
        lines += [
            "",
            f"Extra training data: {parts}. These rows joined the training part of every fold and "
            "no validation fold: every AUC above is on the primary data only, and the extra rows "
            "have no out-of-fold prediction of their own.",
        ]
    cal = metrics["calibration"]
    lines += [
        "",
        f"**Calibration.** `probability` = Platt scaling of the models' mean log-odds, fitted on the OOF "
        f"predictions (batch-independent: an image's probability does not depend on the rest of the batch). "
        f"Cross-fitted over the folds: Brier {cal['brier']:.4f} (uncalibrated {cal['brier_uncalibrated']:.4f}, "
        f"base rate alone {cal['brier_base_rate']:.4f}), expected calibration error {cal['ece']:.4f} "
        f"(uncalibrated {cal['ece_uncalibrated']:.4f}). `submission.csv` holds this probability.",
        "", "![Reliability](reliability.png)",
    ]  # fmt: skip
    lines += _clinical_markdown(metrics) + _ablation_markdown(metrics.get("ablation") or {})
    lines += ["", "![ROC](roc.png)", "", "![AUC per fold](fold_auc.png)", "", "![Feature importance](importance.png)", "",
              "![AUC by subgroup](auc_by_subgroup.png)", "", "## AUC by subgroup", "",
              subgroups.to_markdown(index=False, floatfmt=".3f"), "",
              "## Provenance", "", f"Feature groups: {', '.join(metrics['feature_groups'])}; {metrics['n_features']} features.", ""]  # fmt: skip
    for slug, p in metrics["backbone_provenance"].items():
        weights, pre = p.get("weights") or {}, p.get("preprocessing") or {}
        pooling = f" ({pre['stage_pooling']} stage pooling)" if "stage_pooling" in pre else ""
        lines.append(f"- `{slug}`: {p.get('architecture')}, pretrained={p.get('pretrained')}, weights from "
                     f"{weights.get('source')} (sha256 {str(weights.get('sha256'))[:12]}…), input "
                     f"{pre.get('input_size')}, embedding from {'+'.join(pre.get('stages') or ['head'])}"
                     f"{pooling}, "
                     f"TTA {p.get('tta_views')}")  # fmt: skip
    lines += ["", "Config:", "", "```json", json.dumps(metrics["config"], indent=2), "```", ""]
    return "\n".join(lines)


def _clinical_markdown(metrics: dict[str, Any]) -> list[str]:
    """Every metric for the blend and each model, with patient-bootstrap intervals."""
    columns, rows = metric_table(metrics)
    lines = ["", "## Clinical operating points (ISIC 2024 metrics)", "",
             "pAUC80 is the area of the ROC curve above 80% sensitivity, exactly as the ISIC 2024 "
             "challenge scores it (0 to 0.2). Lesions reviewed per melanoma found = all images "
             "flagged / melanomas among them at that sensitivity (lower is better).", "",
             "| metric | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]  # fmt: skip
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines += [
        f"- {name} not reported: {why}."
        for name, why in (metrics.get("not_reported") or {}).items()
    ]
    return lines


def _ablation_markdown(ablation: dict[str, Any]) -> list[str]:
    rows = ablation.get("groups") or []
    if not rows:
        return []
    lines = ["", "## What each feature group is worth", "", f"Method: {ablation['method']}.", "",
             *([f"**{ablation['unreadable'][0].upper()}{ablation['unreadable'][1:]}.**", ""]
               if ablation.get("unreadable") else []),
             "| group left out | OOF AUC without | ΔAUC [95% CI] | ΔpAUC80 [95% CI] |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for row in rows:
        pauc = "not reported"
        if row.get("delta_pauc80") is not None:
            pauc = delta_text(row["delta_pauc80"], row["delta_pauc80_ci95"])
        lines.append(f"| {row['group']} | {row['oof_auc_without']:.4f} | "
                     f"{delta_text(row['delta_auc'], row['delta_auc_ci95'])} | {pauc} |")  # fmt: skip
    return lines


def _fmt(value: float | None) -> str:
    return "untuned" if value is None else f"{value:.4f}"
