"""Which lesions a run's report shows, and why the blend ranked each where it did.

The galleries a reader asks for after the first AUC: the melanomas the blend ranked lowest, the
benign lesions it ranked highest, and for the patients with the most images and a melanoma, all
their lesions ordered by how unlike the patient's others each looks (the "ugly duckling").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logit as scipy_logit

from stage1_embed.colour import stored_orders
from stage1_embed.errors import DataError
from stage1_embed.thumbnails import make_thumbnails

from .boosters import create_booster
from .cache import ContentCache, content_key
from .cv import FoldMatrices
from .data import StageData
from .features.ugly_duckling import UglyDucklingFeatures
from .model.calibration import Platt
from .model.score import grouped_contributions, top_reasons

logger = logging.getLogger(__name__)
GALLERY_SIZE = 12  # lesions per gallery
PATIENTS = 4  # patient strips
STRIP_SIZE = 24  # lesions per patient strip at most


@dataclass
class Card:
    """One lesion on a page."""

    image_name: str
    patient_id: str
    probability: float | None
    rank: int | None = None  # 1 = ranked most likely malignant of all
    malignant: bool | None = None
    reasons: str = ""
    note: str = ""  # e.g. the ugly-duckling score, or why there is no probability
    thumbnail: bytes | None = None
    error: str = ""
    of: int | None = None  # images ranked
    tied: bool = False  # another image has the same blend score, so the same rank


@dataclass
class Galleries:
    missed: list[Card] = field(default_factory=list)  # melanomas ranked lowest
    flagged: list[Card] = field(default_factory=list)  # benign ranked highest
    patients: list[tuple[str, list[Card]]] = field(default_factory=list)
    strip_order: str = ""


def report_galleries(
    oof: pd.DataFrame, data: StageData, models: Sequence[tuple[str, list[Any]]],
    evaluation: Sequence[FoldMatrices], features_dir: Path, cache: ContentCache, platt: Platt,
) -> Galleries:  # fmt: skip
    """The report's galleries from the run's out-of-fold predictions (``models``: name and fold
    models of each booster), with thumbnails and TreeSHAP reasons."""
    duckling, order = _duckling_scores(data, oof, evaluation)
    # one number per card that orders as the rank does: the run's own calibration of the blend
    # (``platt``, what its saved model gives for that score), not the cross-fitted probability,
    # which calibrates each fold by the others and may order two images across folds otherwise
    logit = scipy_logit(oof["blend"].to_numpy(float).clip(1e-12, 1 - 1e-12))
    rank = oof["blend"].rank(ascending=False, method="min").astype(int)
    ranked = oof.assign(rank=rank, tied=rank.map(rank.value_counts()) > 1, duckling=duckling,
                        shown=platt(logit))  # fmt: skip
    malignant = ranked[ranked["target"] == 1].nsmallest(GALLERY_SIZE, "blend")
    benign = ranked[ranked["target"] == 0].nlargest(GALLERY_SIZE, "blend")
    counts = ranked.groupby("patient_id")["target"].agg(["size", "sum"])
    chosen = counts[counts["sum"] > 0].sort_values("size", ascending=False, kind="stable")
    strips = []
    for patient in chosen.index[:PATIENTS]:
        rows = ranked[ranked["patient_id"] == patient].sort_values("duckling", ascending=False)
        strips.append((str(patient), rows.head(STRIP_SIZE)))
    shown = pd.concat([malignant, benign, *[rows for _, rows in strips]]).drop_duplicates(
        "image_name"
    )
    reasons = oof_reasons(shown["image_name"], oof, models, evaluation)
    thumbs = cached_thumbnails(cache, features_dir, data, list(shown["image_name"]))

    def card(row: Any, in_strip: bool = False) -> Card:
        name = row.image_name
        thumb = thumbs.get(name)
        note = ""
        if in_strip and data.embeddings:
            note = f"unlike the others: z {row.duckling:+.2f}" if np.isfinite(row.duckling) else ""
        return Card(name, str(row.patient_id), float(row.shown), int(row.rank),
                    bool(row.target), reasons.get(name, ""), note,
                    thumb if isinstance(thumb, bytes) else None,
                    thumb if isinstance(thumb, str) else "", of=len(ranked), tied=bool(row.tied))  # fmt: skip

    return Galleries(
        [card(r) for r in malignant.itertuples()], [card(r) for r in benign.itertuples()],
        [(p, [card(r, True) for r in rows.itertuples()]) for p, rows in strips], order,
    )  # fmt: skip


def _duckling_scores(
    data: StageData, oof: pd.DataFrame, evaluation: Sequence[FoldMatrices]
) -> tuple[np.ndarray, str]:
    """Each OOF image's within-patient distance z-score (first backbone), and how strips are
    ordered; without embeddings, the blend's probability instead. A run with the ugly-duckling
    group has the scores in its evaluation folds already (the OOF rows are in the same order)."""
    if not data.embeddings:
        return oof["blend"].to_numpy(float), "by the blend's probability (no embeddings)"
    slug = sorted(data.embeddings)[0]
    name = f"{slug}__ud_dist_z"
    if all(name in fold.X_valid for fold in evaluation):
        scores = np.concatenate([fold.X_valid[name].to_numpy(float) for fold in evaluation])
    else:
        column = UglyDucklingFeatures(slug).compute(data)[name]
        position = pd.Series(np.arange(len(data.frame)), index=data.frame["image_name"].to_numpy())
        scores = column.to_numpy(float)[position.loc[oof["image_name"]].to_numpy()]
    return (
        scores,
        f"by ugly-duckling score (distance to the patient's other lesions, {slug}), most unlike first",
    )


def oof_reasons(
    names: pd.Series, oof: pd.DataFrame, models: Sequence[tuple[str, list[Any]]],
    evaluation: Sequence[FoldMatrices],
) -> dict[str, str]:  # fmt: skip
    """The top three feature groups behind each named image's out-of-fold score: TreeSHAP of the
    fold models that scored it (the image's own evaluation fold), mean over the boosters."""
    wanted = set(names)
    reasons: dict[str, str] = {}
    for fold in evaluation:
        valid_names = oof["image_name"].to_numpy()[oof["fold"].to_numpy() == fold.fold]
        picked = [i for i, n in enumerate(valid_names) if n in wanted]
        if not picked:
            continue
        X = fold.X_valid.iloc[picked]
        values = np.mean(
            [create_booster(name).contributions(fits[fold.fold], X) for name, fits in models],
            axis=0,
        )
        predictions = pd.DataFrame({"image_name": valid_names[picked]})
        contributions = grouped_contributions(values, list(X.columns), predictions)
        reasons |= top_reasons(contributions).to_dict()
    return reasons


def cached_thumbnails(
    cache: ContentCache, features_dir: Path, data: StageData, names: list[str]
) -> dict[str, bytes | str]:
    """Thumbnails of the named images through stage 1's readers, kept in the stage 2 cache under
    the images' content digests (a rerun that shows the same lesions decodes none)."""
    frame = data.frame.set_index("image_name")
    keys = [(str(frame.at[n, "split"]), n) for n in names]
    digests = [
        str(frame.at[n, "content_sha256"]) if "content_sha256" in frame else n for n in names
    ]
    # the same bytes look otherwise when stage 1 swaps their colours (stage1_embed.colour)
    key = content_key("thumbnails", digests, names, stored_orders(data.provenance))

    def compute() -> dict[str, bytes | str]:
        try:
            made = make_thumbnails(features_dir, keys)
        except DataError as err:  # the page then shows this reason in place of each thumbnail
            logger.warning("no thumbnails in the report: %s", err)
            return dict.fromkeys(names, f"no thumbnail: {err}")
        return {name: made[k] for name, k in zip(names, keys, strict=True)}

    def write(value: dict[str, bytes | str], folder: Path) -> None:
        for i, name in enumerate(names):
            (folder / f"{i}.jpg").write_bytes(value[name])  # type: ignore[arg-type]

    def read(folder: Path) -> dict[str, bytes | str]:
        return {name: (folder / f"{i}.jpg").read_bytes() for i, name in enumerate(names)}

    def complete(value: dict[str, bytes | str]) -> bool:  # a failure (images unmounted) is
        return all(isinstance(v, bytes) for v in value.values())  # not kept: the next run retries

    return cache.get_or_compute("thumbnails", key, compute, write, read, complete)
