"""Patient-grouped, target-stratified, seeded folds, saved and reused so runs are comparable.

Part of the stage contract: the expert stage fine-tunes in the evaluation folds and stage 2 scores
with the same ones, so both read them from here (one file, one piece of code)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import StratifiedGroupKFold

from .common import atomic_path
from .errors import DataError

logger = logging.getLogger(__name__)
FOLDS_FILE = "folds.parquet"
EVAL_FOLDS_FILE = "folds_eval.parquet"
EVAL_SEED_OFFSET = 1000  # oof_auc is measured on folds the tuning never saw
_META_KEY = b"melanoma_stack_folds"
FEW_POSITIVES = 5


def fold_groups(train: pd.DataFrame, merge_duplicates: bool = True) -> pd.Series:
    """The group each image's fold follows: its patient; with ``merge_duplicates``, patients
    that share an identical image (the same content digest under two patient ids) merged into
    one group, so one picture never sits in two folds (it would inflate the out-of-fold AUC)."""
    patients = train["patient_id"].astype(str)
    if not merge_duplicates or "content_sha256" not in train.columns:
        return patients.rename("group")
    parent = {p: p for p in patients.unique()}

    def root(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    digests = train["content_sha256"]
    shared = patients[digests.notna()].groupby(digests[digests.notna()]).unique()
    for members in shared[shared.map(len) > 1]:
        roots = sorted(root(p) for p in members)
        for other in roots[1:]:
            parent[other] = roots[0]
    return patients.map(root).rename("group")


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


def folds_key(train: pd.DataFrame, n_folds: int, seed: int, merge_duplicates: bool = True) -> str:
    """Identity of a fold assignment: the training images, their labels and fold groups, the
    number of folds and the seed."""
    return _key(train, n_folds, seed, fold_groups(train, merge_duplicates))


def _key(train: pd.DataFrame, n_folds: int, seed: int, groups: pd.Series) -> str:
    text = "\n".join(sorted(f"{n}\t{p}\t{t}\t{g}" for n, p, t, g in zip(
        train["image_name"], train["patient_id"], train["target"], groups, strict=True
    )))  # fmt: skip
    return hashlib.sha256(f"{n_folds}|{seed}|{text}".encode()).hexdigest()


def load_or_make_folds(
    train: pd.DataFrame, n_folds: int, seed: int, path: Path, merge_duplicates: bool = True
) -> tuple[np.ndarray, bool]:
    """Reuse ``path`` if it was made for the same images, groups, folds and seed; else make and
    save (with each image's fold group)."""
    groups = fold_groups(train, merge_duplicates)
    key = _key(train, n_folds, seed, groups)
    if path.is_file():
        meta = pq.read_schema(path).metadata or {}
        if json.loads(meta.get(_META_KEY, b"{}")).get("key") == key:
            saved = pq.read_table(path).to_pandas().set_index("image_name")["fold"]
            return saved.reindex(train["image_name"]).to_numpy(dtype=np.int8), True
        logger.info("%s was made for other data or settings; making new folds", path)
    regrouped = int((groups != train["patient_id"].astype(str)).sum())
    if regrouped:
        logger.info("%s: %d image(s) regrouped: patients sharing an identical image share a "
                    "fold (--no-merge-duplicates keeps patients apart)", path.name, regrouped)  # fmt: skip
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
    train: pd.DataFrame, n_folds: int, seed: int, stage2_dir: Path, merge_duplicates: bool = True
) -> tuple[np.ndarray, str]:
    """The evaluation folds (``seed`` + EVAL_SEED_OFFSET) that stage 2 scores with and the expert
    stage fine-tunes in: one file, one piece of code. Returns the folds and their key."""
    eval_seed = seed + EVAL_SEED_OFFSET
    path = Path(stage2_dir) / EVAL_FOLDS_FILE
    folds, _ = load_or_make_folds(train, n_folds, eval_seed, path, merge_duplicates)
    return folds, folds_key(train, n_folds, eval_seed, merge_duplicates)
