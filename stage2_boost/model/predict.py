"""``python -m stage2_boost predict``: score images that stage 1 embedded, with a saved model.

Writes ``OUT/predictions.csv`` (one row per image of the scored split: probability, the models'
scores, patient context, read status, and with ``--explain`` the top reasons),
``OUT/submission.csv`` (Kaggle ``image_name,target``, the calibrated probability) and, with
``--explain``, ``OUT/explanations.csv`` (every feature group's contribution per image).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stage1_embed.common import atomic_path
from stage1_embed.schema import read_manifest

from ..data import load_stage_data
from ..errors import ConfigError, OutputError
from .load import load_model
from .score import score_rows, top_reasons

logger = logging.getLogger(__name__)
PREDICTIONS = "predictions.csv"
SUBMISSION = "submission.csv"
EXPLANATIONS = "explanations.csv"


@dataclass(frozen=True)
class PredictSummary:
    out_dir: Path
    split: str
    n_scored: int
    n_unreadable: int
    n_single_image_patients: int
    patients_from_csv: bool
    model_run: str
    model_auc: float
    predictions: pd.DataFrame  # what predictions.csv holds
    skipped: list[str]  # files of a bare folder that were not scored, and why
    metrics: dict | None  # with labels: AUC, pAUC80, ... with patient-bootstrap intervals
    warnings: list[str]  # what the probabilities do not mean (chance level, all the same)


def run_predict(
    model_dir: Path, features_dir: Path, out_dir: Path, split: str | None = None,
    explain: bool = False,
) -> PredictSummary:  # fmt: skip
    model = load_model(model_dir)
    run = str(model.manifest["run_id"])
    check_scored_by(Path(out_dir), run)
    manifest, provenance = read_manifest(features_dir)
    split = split or ("test" if (manifest["split"] == "test").any() else "train")
    wanted = manifest[manifest["split"] == split]
    if wanted.empty:
        raise ConfigError(
            f"{features_dir} has no {split!r} images to score (splits: "
            f"{sorted(manifest['split'].unique())}). Use --split with one of those."
        )
    experts = list(model.manifest.get("feature_set", {}).get("experts", []))
    data = load_stage_data(features_dir, list(model.backbones), experts=experts)
    rows = data.split_index(split)
    scored = score_rows(model, data, rows, explain)
    predictions = _prediction_table(scored, data.frame.iloc[rows], run, wanted)
    unreadable = predictions["read_status"] != "ok"
    metrics = None
    if split == "train":  # labels exist: carry them, and say how well the model ranks them
        labels = wanted.set_index("image_name")["target"]
        predictions.insert(1, "target", labels.reindex(predictions["image_name"]).to_numpy())
        metrics = _labelled_metrics(predictions[~unreadable])
    out_dir = Path(out_dir)
    ok = predictions[~unreadable]
    _write_outputs(out_dir, predictions, ok, scored.contributions)
    summary = PredictSummary(
        out_dir, split, len(ok), int(unreadable.sum()), int((ok["patient_images"] == 1).sum()),
        not provenance.get("patients_from_image_names", False), model.manifest["run_id"],
        float(model.manifest["metrics"]["oof_auc"]), predictions,
        list(provenance.get("skipped_files") or []), metrics, _warnings(model.manifest, ok),
    )  # fmt: skip
    for warning in summary.warnings:
        logger.warning("%s", warning)
    _write_page(summary, features_dir, split)
    return summary


def _prediction_table(
    scored: Any, frame: pd.DataFrame, run: str, wanted: pd.DataFrame
) -> pd.DataFrame:
    """One row per wanted image: the scored ones with their context (and reasons), then the
    unreadable ones with their status and no probability."""
    predictions = scored.predictions.assign(
        model_run=run,
        patient_images=frame.groupby("patient_id")["image_name"].transform("size").to_numpy(),
        age_approx=frame["age_approx"].to_numpy(),
        sex=frame["sex"].to_numpy(),
        anatom_site_general_challenge=frame["anatom_site_general_challenge"].to_numpy(),
        read_status="ok",
        read_error=None,
    )
    if scored.contributions is not None:
        reasons = top_reasons(scored.contributions)
        predictions["top_reasons"] = reasons.reindex(predictions["image_name"]).to_numpy()
    unreadable = wanted[~wanted["image_name"].isin(predictions["image_name"])]
    if len(unreadable):
        logger.warning("%d image(s) could not be read and have no probability (read_status)",
                       len(unreadable))  # fmt: skip
        predictions = pd.concat([predictions, unreadable[["image_name", "patient_id", "read_status", "read_error"]]],
                                ignore_index=True)  # fmt: skip
    return predictions


def _write_outputs(
    out_dir: Path, predictions: pd.DataFrame, ok: pd.DataFrame, contributions: pd.DataFrame | None
) -> None:
    """predictions.csv, the Kaggle submission.csv and (with --explain) explanations.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(predictions, out_dir / PREDICTIONS)
    _write_csv(ok[["image_name", "probability"]].rename(columns={"probability": "target"}),
               out_dir / SUBMISSION)  # fmt: skip
    if contributions is not None:
        _write_csv(contributions, out_dir / EXPLANATIONS)


def check_scored_by(out: Path, run: str) -> None:
    """Scores of one model never replace another's: a folder whose predictions.csv came from
    another model run (its ``model_run`` column) is refused before anything is written."""
    path = out / PREDICTIONS
    if not path.is_file():
        return
    try:
        before = pd.read_csv(path, usecols=lambda c: c == "model_run", nrows=1)
    except (OSError, ValueError, pd.errors.ParserError):
        before = pd.DataFrame()
    earlier = str(before["model_run"].iloc[0]) if len(before) and "model_run" in before else None
    if earlier == run:
        return
    free = out.parent / f"{out.name}-{run}"
    raise OutputError(
        f"{path} holds the scores of {'model run ' + earlier if earlier else 'another model'}; "
        f"scoring with model run {run} there would replace them. Pass another --out, e.g. "
        f"--out {free}, or delete {path} to replace them."
    )


def _warnings(manifest: dict, scored: pd.DataFrame) -> list[str]:
    """Plain words for probabilities that rank nothing: a model at chance level in its own
    out-of-fold evaluation, or one probability for every scored image."""
    from ..chance import chance_text

    found = []
    own = manifest.get("metrics") or {}
    chance = chance_text(own["oof_auc_ci95"], own.get("calibration"))
    if chance:
        found.append(f"this model's own out-of-fold evaluation shows {chance}; do not read its "
                     "probabilities as a ranking")  # fmt: skip
    values = scored["probability"].round(6).unique()
    if len(scored) > 1 and len(values) == 1:
        found.append(f"every scored image got the same probability ({values[0]:.4f}): the model "
                     "ranks none above another, most likely because every feature it uses is "
                     "missing for them (a bare folder has no age, sex or site, and each image "
                     "is its own patient)")  # fmt: skip
    return found


def _write_page(summary: PredictSummary, features_dir: Path, split: str) -> None:
    """predictions.html: each image shown, thumbnails made through stage 1's readers."""
    from stage1_embed.errors import DataError
    from stage1_embed.thumbnails import make_thumbnails

    from ..galleries import Card
    from ..html_pages import write_predictions_html

    frame = summary.predictions
    reasons = frame["top_reasons"] if "top_reasons" in frame else pd.Series("", index=frame.index)
    cards = [
        Card(str(row.image_name), str(row.patient_id),
             None if row.read_status != "ok" else float(row.probability),
             malignant=bool(target) if pd.notna(target) else None,
             reasons="" if pd.isna(why) else str(why),
             error="" if row.read_status == "ok" else f"{row.read_status}: {row.read_error}")
        for row, target, why in zip(frame.itertuples(), frame.get("target", [pd.NA] * len(frame)),
                                    reasons, strict=True)
    ]  # fmt: skip

    def add_thumbnails(shown: list[Card]) -> None:
        readable = [c for c in shown if not c.error]
        try:
            made: dict = make_thumbnails(features_dir, [(split, c.image_name) for c in readable])
        except DataError as err:  # the page shows the reason in place of each thumbnail
            logger.warning("no thumbnails on predictions.html: %s", err)
            made = {(split, c.image_name): f"no thumbnail: {err}" for c in readable}
        for c in readable:
            thumb = made[(split, c.image_name)]
            c.thumbnail, c.error = (thumb, "") if isinstance(thumb, bytes) else (None, thumb)

    labelled = _labelled_text(summary.metrics) if summary.metrics is not None else ""
    write_predictions_html(summary.out_dir, summary, cards, add_thumbnails, labelled)


def _labelled_text(m: dict) -> str:
    """``labelled: 200 images (27 malignant): auc 0.812 [...]; pauc80 0.061 [...] (...)``."""
    from ..metrics import interval_text

    parts = [f"{name} {interval_text(m[name], m[f'{name}_ci95'])}"
             for name in ("auc", "pauc80") if m.get(name) is not None]  # fmt: skip
    return (f"labelled: {m['n']} images ({m['n_pos']} malignant): " + "; ".join(parts)
            + " (95% CI, patient bootstrap)")  # fmt: skip


def _labelled_metrics(scored: pd.DataFrame) -> dict | None:
    """AUC and the ISIC 2024 metrics of the calibrated probability, with patient-bootstrap
    intervals; None when the labelled images hold only one class."""
    from ..metrics import metric_summary

    target = scored["target"].to_numpy(dtype=int)
    if target.min() == target.max():
        return None
    return {"n": len(scored), "n_pos": int(target.sum())} | metric_summary(
        target, scored["probability"].to_numpy(float), scored["patient_id"].astype(str).to_numpy()
    )


def format_predict_summary(summary: PredictSummary) -> str:
    lines = [
        f"scored {summary.n_scored} {summary.split} image(s) with model run {summary.model_run} "
        f"(OOF AUC {summary.model_auc:.4f}); {summary.n_unreadable} unreadable (no probability)",
    ]
    if summary.patients_from_csv:
        lines.append(f"  {summary.n_single_image_patients} image(s) are their patient's only image: "
                     "their patient and ugly-duckling features are missing")  # fmt: skip
    else:
        lines.append("  no CSV: each image was scored as its own patient (patient and ugly-duckling "
                     "features missing) with missing age, sex and site")  # fmt: skip
    if summary.metrics is not None:
        m = summary.metrics
        lines.append(f"  {_labelled_text(m)}; predictions.csv has their target")
        lines += [f"  {name} not reported: {why}" for name, why in m["not_reported"].items()
                  if name in ("auc", "pauc80")]  # fmt: skip
    lines += [f"  not scored: {note}" for note in summary.skipped]
    lines += [f"  WARNING: {warning}" for warning in summary.warnings]
    lines.append(
        f"outputs: {summary.out_dir / PREDICTIONS}, {summary.out_dir / SUBMISSION}, "
        f"{summary.out_dir / 'predictions.html'} (open it in a browser)"
    )
    return "\n".join(lines)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
