"""Know the data before it trains: what a dataset holds that no AUC will show.

One result, written as ``OUT/data_check.json`` (and, by ``python -m stage1_embed check``, as
``OUT/data_check.html`` with the images of every finding), shaped like cleanlab's Datalab
report: a fixed set of checks, each with its findings and a one-line summary.

- ``channel_order``: each source's colour order (colour.py).
- ``near_duplicates``: image pairs of one lesion: identical bytes (the manifest's content
  digests; similarity 1.0) and, from the check command, different shots of one lesion
  (same_lesion.py: matched keypoints; similarity the embeddings' cosine, ``inliers`` the matched
  points). Each pair says whether it crosses patients or splits, and whether the labels differ.
- ``metadata``: one patient with two sexes, or ages within a patient too far apart to be one
  person's visits.
- ``shortcut``: how well the acquisition fields alone (image width and height, file size,
  format) rank the label, patient-grouped out of fold, with a patient-bootstrap interval.
- ``shift``: adversarial validation, how well a model tells train from test, or the main data
  from an extra set (on metadata, embeddings and both).

Every stage 1 run writes the cheap checks (colour order from a sample, identical files and the
last check's same-lesion pairs whose images are unchanged, metadata); the check command adds
every image's colour, the same-lesion search, the shortcut and shift models and the page.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .common import atomic_write_text
from .folds import current_same_lesion_pairs
from .same_lesion import same_lesion_pairs

logger = logging.getLogger(__name__)
DATA_CHECK_JSON = "data_check.json"
AGE_SPREAD = 25  # years between a patient's youngest and oldest image: not one person's visits
SHORTCUT_WARNING = 0.6  # lower bound of the acquisition-only AUC above which a model can cheat
SHIFT_WARNING = 0.6  # lower bound of the tell-apart AUC above which two sets differ
_FIELDS = ("width", "height", "file_size", "source_format")


def near_duplicates(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Every pair of images with identical stored bytes, flagged by what it crosses."""
    digests = manifest["content_sha256"]
    shared = manifest[digests.notna() & digests.duplicated(keep=False)]  # only those can pair
    return [_pair(a, b, 1.0, "content digest (identical bytes)")
            for _, group in shared.groupby("content_sha256", sort=True)
            for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2)]  # fmt: skip


def same_lesion_duplicates(
    manifest: pd.DataFrame, vectors: np.ndarray, load: Callable[[int], Image.Image | None]
) -> list[dict[str, Any]]:
    """Pairs of different files that show one lesion (same_lesion.py), flagged as above; the
    similarity is the two embeddings' cosine, ``inliers`` the matched points."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = []
    for found in same_lesion_pairs(manifest, vectors, load):
        a, b = manifest.iloc[found["row_a"]], manifest.iloc[found["row_b"]]
        if a["content_sha256"] != b["content_sha256"]:  # identical files: listed by digest
            cosine = float(unit[found["row_a"]] @ unit[found["row_b"]])
            pairs.append(_pair(a, b, round(cosine, 4), f"keypoints ({found['inliers']} matched "
                               "points under one similarity transform)", inliers=found["inliers"]))  # fmt: skip
    return pairs


def remembered_lesion_pairs(manifest: pd.DataFrame, out: Path) -> list[dict[str, Any]]:
    """The keypoint pairs of the last check in ``out`` whose images have not changed since."""
    remembered = current_same_lesion_pairs(out, manifest)
    rows = manifest.drop_duplicates("image_name").set_index("image_name", drop=False)
    return [_pair(rows.loc[p.image_a], rows.loc[p.image_b], p.similarity, p.method,
                  inliers=int(p.inliers))
            for p in remembered.itertuples() if pd.notna(p.inliers)]  # fmt: skip


def _pair(
    a: pd.Series, b: pd.Series, similarity: float, method: str, **more: Any
) -> dict[str, Any]:
    return {"image_a": a["image_name"], "image_b": b["image_name"],
            "split_a": a["split"], "split_b": b["split"],
            "patient_a": a["patient_id"], "patient_b": b["patient_id"],
            "similarity": similarity, "method": method,
            "same_patient": a["patient_id"] == b["patient_id"],
            "crosses_splits": a["split"] != b["split"],
            "labels_differ": _labels_differ(a["target"], b["target"]),
            "sha256_a": a["content_sha256"], "sha256_b": b["content_sha256"], **more}  # fmt: skip


def _labels_differ(a: Any, b: Any) -> bool:
    return bool(pd.notna(a) and pd.notna(b) and int(a) != int(b))


def metadata_conflicts(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Patients whose rows disagree: two sexes, or an age spread no series of visits has."""
    per_patient = manifest.groupby("patient_id").agg(
        sexes=("sex", "nunique"), youngest=("age_approx", "min"), oldest=("age_approx", "max")
    )
    odd = per_patient[
        (per_patient["sexes"] > 1) | (per_patient["oldest"] - per_patient["youngest"] > AGE_SPREAD)
    ]
    found = []
    for patient, rows in manifest[manifest["patient_id"].isin(odd.index)].groupby(
        "patient_id", sort=True
    ):
        sexes = sorted(set(rows["sex"].dropna()))
        if len(sexes) > 1:
            found.append({"patient_id": patient, "problem": "more than one sex",
                          "values": sexes, "images": rows["image_name"].tolist()[:12]})  # fmt: skip
        ages = rows["age_approx"].dropna()
        if len(ages) and ages.max() - ages.min() > AGE_SPREAD:
            found.append({"patient_id": patient, "problem": f"ages {ages.min():g} to {ages.max():g} "
                          f"(more than {AGE_SPREAD} years apart)", "values": sorted(set(ages)),
                          "images": rows["image_name"].tolist()[:12]})  # fmt: skip
    return found


def shortcut(manifest: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """The label's AUC from the acquisition fields alone: a small gradient-boosted model,
    patient-grouped 5-fold out of fold, with a patient-bootstrap 95% interval."""
    rows = manifest[(manifest["split"] == "train") & manifest["target"].notna()
                    & (manifest["read_status"] == "ok")]  # fmt: skip
    target = rows["target"].astype(int).to_numpy()
    n_pos = int(target.sum())
    if n_pos < 5 or n_pos == len(target):
        return {"auc": None, "reason": f"needs at least 5 malignant and 5 benign training "
                f"images with their files read, these data have {n_pos} of {len(target)}"}  # fmt: skip
    X = pd.DataFrame({f: rows[f] for f in _FIELDS}).assign(
        source_format=lambda t: t["source_format"].astype("category").cat.codes
    ).astype(float)  # fmt: skip
    patients = rows["patient_id"].astype(str).to_numpy()
    oof = _grouped_oof(X.to_numpy(), None, target, patients, seed, learning_rate=0.05)
    auc = _auc(target, oof)
    low, high = _patient_interval(target, oof, patients, n_boot, seed)
    warn = low > SHORTCUT_WARNING
    return {"auc": auc, "ci95": [low, high], "fields": list(_FIELDS), "warning": warn,
            "reason": (f"image size, file size and format alone rank the label at AUC {auc:.3f} "
                       f"[{low:.3f}, {high:.3f}]: " + ("a model can learn the clinic or camera "
                       "instead of the lesion; keep the acquisition group out (the default) and "
                       "compare subgroups" if warn else "no strong shortcut through them"))}  # fmt: skip


def shift(
    frame: pd.DataFrame, is_b: np.ndarray, vectors: np.ndarray | None, seed: int = 0,
    n_boot: int = 200,
) -> dict[str, Any]:  # fmt: skip
    """Adversarial validation: how well a small model tells set B's rows from set A's (e.g. test
    from train), patient-grouped 5-fold out of fold, with a patient-bootstrap interval; on the
    metadata, on the images (``vectors``: one backbone's embeddings, PCA fitted inside each
    fold) and on both, so the table says which side tells them apart. A random split of one set
    reads about 0.5."""
    is_b = np.asarray(is_b, dtype=int)
    patients = frame["patient_id"].astype(str).to_numpy()
    if min(is_b.sum(), len(is_b) - is_b.sum()) < 10:
        return {"reason": "needs at least 10 images on each side"}
    meta = pd.DataFrame({
        "age": pd.to_numeric(frame["age_approx"], errors="coerce"),
        "sex": frame["sex"].astype("category").cat.codes,
        "site": frame["anatom_site_general_challenge"].astype("category").cat.codes,
    }).astype(float).to_numpy()  # fmt: skip
    sides: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {"metadata": (meta, None)}
    if vectors is not None:
        sides |= {"images": (None, vectors), "metadata + images": (meta, vectors)}
    result: dict[str, Any] = {}
    for name, (table, images) in sides.items():
        score = _grouped_oof(table, images, is_b, patients, seed)
        auc = _auc(is_b, score)
        low, high = _patient_interval(is_b, score, patients, n_boot, seed)
        result[name] = {"auc": auc, "ci95": [low, high], "warning": low > SHIFT_WARNING}
    worst = max(result, key=lambda k: result[k]["auc"])
    result["warning"] = any(v["warning"] for v in result.values() if isinstance(v, dict))
    result["reason"] = (f"a model tells the two sets apart at AUC {result[worst]['auc']:.3f} "
                        f"[{result[worst]['ci95'][0]:.3f}, {result[worst]['ci95'][1]:.3f}] from "
                        f"{worst}" + (": they come from different distributions, so a model "
                        "trained on one may not hold on the other" if result["warning"] else
                        ": no shift shown"))  # fmt: skip
    return result


def _grouped_oof(
    table: np.ndarray | None, images: np.ndarray | None, y: np.ndarray, groups: np.ndarray,
    seed: int, learning_rate: float = 0.1,
) -> np.ndarray:  # fmt: skip
    """Out-of-fold scores of a small booster, patients never split; ``images`` reduced to 16
    components by a PCA fitted inside each fold."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    oof = np.zeros(len(y))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for fit, valid in folds.split(np.zeros(len(y)), y, groups):
        parts_fit, parts_valid = [], []
        if table is not None:
            parts_fit.append(table[fit])
            parts_valid.append(table[valid])
        if images is not None:
            pca = PCA(min(16, images.shape[1]), random_state=seed).fit(images[fit])
            parts_fit.append(pca.transform(images[fit]))
            parts_valid.append(pca.transform(images[valid]))
        model = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=learning_rate, random_state=seed
        )
        model.fit(np.hstack(parts_fit), y[fit])
        oof[valid] = model.predict_proba(np.hstack(parts_valid))[:, 1]
    return oof


def _auc(target: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(target, score))


def _patient_interval(
    target: np.ndarray, score: np.ndarray, patients: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval of the AUC with whole patients resampled (replicates that draw
    one class only are skipped). Stage 2's vectorised version lives above stage 1's contract."""
    from sklearn.metrics import roc_auc_score

    codes, uniques = pd.factorize(patients)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))
        w = weights[codes]
        keep = w > 0
        if target[keep].min() != target[keep].max():
            values.append(roc_auc_score(target[keep], score[keep], sample_weight=w[keep]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def cheap_checks(manifest: pd.DataFrame, colours: dict[str, Any], out: Path) -> dict[str, Any]:
    """What every stage 1 run checks: colour order (a sample), duplicates (and the same-lesion
    pairs an earlier check found whose images are unchanged) and metadata."""
    pairs = near_duplicates(manifest) + remembered_lesion_pairs(manifest, out)
    return {"channel_order": colours, "near_duplicates": pairs,
            "metadata": metadata_conflicts(manifest),
            "shortcut": {"auc": None, "reason": "run python -m stage1_embed check"}}  # fmt: skip


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What was found, one line per check that found something (nothing when all is well)."""
    lines = []
    pairs = result.get("near_duplicates") or []
    crossing = [p for p in pairs if not p["same_patient"]]
    if pairs:
        identical = sum("inliers" not in p for p in pairs)
        lines.append(f"{len(pairs)} pair(s) of one lesion ({identical} identical files), "
                     f"{len(crossing)} across patients, "
                     f"{sum(p['crosses_splits'] for p in pairs)} across splits, "
                     f"{sum(p['labels_differ'] for p in pairs)} with different labels")  # fmt: skip
    conflicts = result.get("metadata") or []
    if conflicts:
        lines.append(f"{len(conflicts)} patient(s) with conflicting metadata, e.g. "
                     f"{conflicts[0]['patient_id']}: {conflicts[0]['problem']}")  # fmt: skip
    cut = result.get("shortcut") or {}
    if cut.get("warning"):
        lines.append(f"shortcut: {cut['reason']}")
    for name, found in (result.get("shift") or {}).items():
        if found.get("warning"):
            lines.append(f"shift, {name}: {found['reason']}")
    return lines


def write_data_check(out: Path, result: dict[str, Any]) -> Path:
    """``OUT/data_check.json`` (atomically), and its findings in the log."""
    path = Path(out) / DATA_CHECK_JSON
    plain = lambda v: v.item() if isinstance(v, np.generic) else str(v)  # noqa: E731
    atomic_write_text(path, json.dumps(result, indent=2, default=plain))
    for line in summary_lines(result):
        logger.warning("data check: %s (details: %s)", line, path)
    return path
