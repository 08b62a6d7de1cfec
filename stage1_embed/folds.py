"""Patient-grouped, target-stratified, seeded folds, saved and reused so runs are comparable.

Part of the stage contract: the expert stage fine-tunes in the evaluation folds and stage 2 scores
with the same ones, so both read them from here (one file, one piece of code)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from .common import atomic_path
from .errors import DataError

logger = logging.getLogger(__name__)
FOLDS_FILE = "folds.parquet"
EVAL_FOLDS_FILE = "folds_eval.parquet"
SAME_LESION_FILE = "same_lesion.parquet"
EVAL_SEED_OFFSET = 1000  # oof_auc is measured on folds the tuning never saw
_META_KEY = b"melanoma_stack_folds"
FEW_POSITIVES = 5


def fold_groups(
    train: pd.DataFrame, merge_duplicates: bool = True, links: Sequence[tuple[str, str]] = ()
) -> pd.Series:
    """The group each image's fold follows: its patient; with ``merge_duplicates``, patients
    that share an identical image (the same content digest under two patient ids) or are joined
    by ``links`` (image-name pairs of one lesion: ``read_same_lesion_links``) merged into one
    group, so one lesion never sits in two folds (it would inflate the out-of-fold AUC)."""
    patients = train["patient_id"].astype(str)
    if not merge_duplicates:
        return patients.rename("group")
    codes, names = pd.factorize(patients)
    edges = [np.zeros((0, 2), np.int64)]
    if "content_sha256" in train.columns:
        digests = train["content_sha256"].to_numpy()
        known = pd.notna(digests)
        first = pd.Series(codes[known]).groupby(digests[known]).transform("first").to_numpy()
        edges.append(np.c_[first, codes[known]])
    position = pd.Series(codes, index=train["image_name"].to_numpy())
    linked = [(a, b) for a, b in links if a in position.index and b in position.index]
    if linked:
        edges.append(np.array([(position[a], position[b]) for a, b in linked], np.int64))
    pairs = np.vstack(edges)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (len(names),) * 2)
    _, component = connected_components(graph, directed=False)
    first_name = pd.Series(names).groupby(component).transform("min").to_numpy()
    return pd.Series(first_name[codes], index=train.index, name="group")


def write_same_lesion_links(out: Path, pairs: list[dict[str, Any]]) -> Path:
    """``OUT/same_lesion.parquet``: the image pairs of one lesion the data check found, with
    both images' content digests (a pair whose image changed since is not used)."""
    columns = ["image_a", "image_b", "sha256_a", "sha256_b", "similarity", "method", "inliers"]
    table = pd.DataFrame([{c: p.get(c) for c in columns} for p in pairs], columns=columns)
    path = Path(out) / SAME_LESION_FILE
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def current_same_lesion_pairs(out: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The data check's same-lesion pairs in ``out`` whose two images are in ``manifest`` with
    the content they had when checked (none if the check was not run)."""
    path = Path(out) / SAME_LESION_FILE
    if not path.is_file() or "content_sha256" not in manifest.columns:
        return pd.DataFrame(columns=["image_a", "image_b"])
    table = pd.read_parquet(path)
    digest = manifest.set_index("image_name")["content_sha256"]
    digest = digest[~digest.index.duplicated()]
    current = (table["image_a"].map(digest) == table["sha256_a"]) & (
        table["image_b"].map(digest) == table["sha256_b"]
    )
    return table[current].reset_index(drop=True)


def read_same_lesion_links(out: Path, train: pd.DataFrame) -> list[tuple[str, str]]:
    """The image-name pairs of ``current_same_lesion_pairs``, for ``fold_groups``."""
    pairs = current_same_lesion_pairs(out, train)
    return list(zip(pairs["image_a"], pairs["image_b"], strict=True))


def make_folds(
    train: pd.DataFrame, n_folds: int, seed: int, name: str = "folds",
    groups: pd.Series | None = None,
) -> np.ndarray:  # fmt: skip
    """Fold number per row of ``train``: no group (default: patient) in two folds, positives
    spread evenly (``name``: what the warnings call this split, e.g. its file)."""
    groups = train["patient_id"] if groups is None else groups
    check_trainable(train, n_folds)
    if groups.nunique() < n_folds:
        raise DataError(f"{groups.nunique()} fold groups (patients, merged where they share an "
                        f"identical image) cannot fill {n_folds} folds.")  # fmt: skip
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(train), -1, dtype=np.int8)
    for fold, (_, valid) in enumerate(splitter.split(train, train["target"], groups)):
        folds[valid] = fold
    _warn_few_positives(train["target"].to_numpy(), folds, f"{name} (seed {seed})")
    return folds


def check_trainable(train: pd.DataFrame, n_folds: int) -> None:
    """Refuse data that cannot support ``n_folds``-fold grouped cross-validation."""
    if train.empty:
        raise DataError(
            "The stage 1 outputs hold no training images, only test images (a folder written by "
            "scoring with --model, or a dataset without train.csv). Train on the stage 1 outputs "
            "of a dataset with a train.csv: ./run_all.sh --data DIR."
        )
    n_pos = int(train["target"].sum())
    classes = train["target"].nunique()
    if classes < 2:
        raise DataError(
            f"The training set has a single class ({len(train)} rows, target all "
            f"{int(train['target'].iloc[0])}); AUC needs both malignant and benign images."
        )
    if n_pos < n_folds:
        raise DataError(
            f"The training set has {n_pos} malignant image(s), fewer than the {n_folds} folds: "
            "some folds would have none. Use fewer folds (--folds) or more data."
        )
    n_patients = train["patient_id"].nunique()
    if n_patients < n_folds:
        raise DataError(f"{n_patients} patients cannot fill {n_folds} patient-grouped folds.")


def _warn_few_positives(target: np.ndarray, folds: np.ndarray, name: str) -> None:
    """One line per split: which of its folds have too few malignant images to score well."""
    few = [(int(k), int(target[folds == k].sum())) for k in np.unique(folds)]
    few = [(k, n) for k, n in few if n < FEW_POSITIVES]
    if few:
        listed = ", ".join(f"fold {k} has {n}" for k, n in few)
        logger.warning("%s: %s malignant image(s), fewer than %d: their per-fold AUCs are very "
                       "noisy", name, listed, FEW_POSITIVES)  # fmt: skip


def folds_key(
    train: pd.DataFrame, n_folds: int, seed: int, merge_duplicates: bool = True,
    links: Sequence[tuple[str, str]] = (),
) -> str:  # fmt: skip
    """Identity of a fold assignment: the training images, their labels and fold groups, the
    number of folds and the seed."""
    return _key(train, n_folds, seed, fold_groups(train, merge_duplicates, links))


def _key(train: pd.DataFrame, n_folds: int, seed: int, groups: pd.Series) -> str:
    text = "\n".join(sorted(f"{n}\t{p}\t{t}\t{g}" for n, p, t, g in zip(
        train["image_name"], train["patient_id"], train["target"], groups, strict=True
    )))  # fmt: skip
    return hashlib.sha256(f"{n_folds}|{seed}|{text}".encode()).hexdigest()


def load_or_make_folds(
    train: pd.DataFrame, n_folds: int, seed: int, path: Path, merge_duplicates: bool = True,
    links: Sequence[tuple[str, str]] = (),
) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Reuse ``path`` if it was made for the same images, groups, folds and seed; else make and
    save (with each image's fold group)."""
    groups = fold_groups(train, merge_duplicates, links)
    key = _key(train, n_folds, seed, groups)
    if path.is_file():
        meta = pq.read_schema(path).metadata or {}
        if json.loads(meta.get(_META_KEY, b"{}")).get("key") == key:
            saved = pq.read_table(path).to_pandas().set_index("image_name")["fold"]
            return saved.reindex(train["image_name"]).to_numpy(dtype=np.int8), True
        logger.info("%s was made for other data or settings; making new folds", path)
    regrouped = int((groups != train["patient_id"].astype(str)).sum())
    if regrouped:
        logger.info("%s: %d image(s) regrouped: patients sharing an image of one lesion share "
                    "a fold (--no-merge-duplicates keeps patients apart)", path.name, regrouped)  # fmt: skip
    folds = make_folds(train, n_folds, seed, path.name, groups)
    table = pa.Table.from_pandas(
        pd.DataFrame({"image_name": train["image_name"].to_numpy(), "patient_id": train["patient_id"].to_numpy(),
                      "group": groups.to_numpy(), "target": train["target"].astype(int).to_numpy(), "fold": folds}),
        preserve_index=False,
    )  # fmt: skip
    meta = {"key": key, "n_folds": n_folds, "seed": seed}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return folds, False


def load_or_make_eval_folds(
    train: pd.DataFrame, n_folds: int, seed: int, stage2_dir: Path, merge_duplicates: bool = True,
    links: Sequence[tuple[str, str]] = (),
) -> tuple[np.ndarray, str]:  # fmt: skip
    """The evaluation folds (``seed`` + EVAL_SEED_OFFSET) that stage 2 scores with and the expert
    stage fine-tunes in: one file, one piece of code. Returns the folds and their key."""
    eval_seed = seed + EVAL_SEED_OFFSET
    path = Path(stage2_dir) / EVAL_FOLDS_FILE
    folds, _ = load_or_make_folds(train, n_folds, eval_seed, path, merge_duplicates, links)
    return folds, folds_key(train, n_folds, eval_seed, merge_duplicates, links)
