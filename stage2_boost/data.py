"""Read and validate stage 1's outputs (manifest + embeddings) into aligned arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stage1_embed.common import file_sha256
from stage1_embed.schema import (
    EMBEDDINGS_DIR,
    REBUILD_HINT,
    USABLE_STATUSES,
    embeddings_path,
    read_embeddings,
    read_manifest,
    read_provenance,
)

from .errors import ContractError

logger = logging.getLogger(__name__)


@dataclass
class StageData:
    """Usable rows of both splits, and per backbone an embedding matrix aligned with them."""

    frame: pd.DataFrame  # manifest rows, index 0..n-1, plus ``source``
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    embedding_provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_sources: list[str] = field(default_factory=list)  # names of --extra-data sets, in order
    experts: dict[str, np.ndarray] = field(default_factory=dict)  # slug -> probability (NaN: none)
    expert_provenance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "source" not in self.frame.columns:
            self.frame = self.frame.assign(source=self.dataset)

    @property
    def dataset(self) -> str:
        return str(self.provenance.get("dataset", "dataset"))

    @property
    def is_extra(self) -> np.ndarray:
        """True for rows of an extra training set (they train, never validate)."""
        return (self.frame["source"] != self.dataset).to_numpy()

    def train_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Training rows of the primary data (folded and scored) and of the extra sets."""
        train = (self.frame["split"] == "train").to_numpy()
        return np.flatnonzero(train & ~self.is_extra), np.flatnonzero(train & self.is_extra)

    @property
    def target(self) -> np.ndarray:
        """Labels as int64, -1 for unlabelled (test) rows."""
        return self.frame["target"].to_numpy(dtype=np.int64, na_value=-1)

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.frame["split"] == split).to_numpy())


def available_backbones(features_dir: Path) -> list[str]:
    """Slugs of the embedding files present, sorted."""
    folder = Path(features_dir) / EMBEDDINGS_DIR
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def load_stage_data(
    features_dir: Path, backbones: list[str] | None, extra_dirs: Sequence[Path] = (),
    experts: Sequence[str] = (),
) -> StageData:  # fmt: skip
    """Manifest rows usable by stage 2, plus embeddings of ``backbones`` (None = all present);
    ``extra_dirs`` are stage 1 outputs of extra training sets, appended as extra rows;
    ``experts`` are slugs of FEATURES/experts/<slug>.parquet (the expert stage's probabilities;
    extra rows have none: they are never held out)."""
    data = _load_one(features_dir, backbones)
    for folder in extra_dirs:
        data = _with_extra(data, _load_one(folder, sorted(data.embeddings)), folder)
    for slug in experts:
        path = Path(features_dir) / "experts" / f"{slug}.parquet"
        if not path.is_file():
            raise ContractError(
                f"No expert probabilities at {path}. Run the expert stage first: python -m "
                f"stage1_embed.experts --data DATA --out {features_dir} --experts SPEC "
                "(./run_all.sh --experts does it)."
            )
        table = pd.read_parquet(path)
        keys = pd.MultiIndex.from_frame(table[["split", "image_name"]])
        wanted = pd.MultiIndex.from_frame(data.frame[["split", "image_name"]])
        values = pd.Series(table["expert"].to_numpy(dtype=float), index=keys).reindex(wanted)
        missing = values.isna().to_numpy() & ~data.is_extra
        if missing.any():
            raise ContractError(
                f"{path} lacks {int(missing.sum())} image(s) of the features; rerun the expert stage."
            )
        data.experts[slug] = values.to_numpy()
        data.expert_provenance[slug] = read_provenance(path)
    return data


def _load_one(features_dir: Path, backbones: list[str] | None) -> StageData:
    manifest, provenance = read_manifest(features_dir)
    _check_csv_unchanged(provenance, Path(features_dir) / "manifest.parquet")
    frame = manifest[manifest["read_status"].isin(USABLE_STATUSES)].reset_index(drop=True)
    dropped = len(manifest) - len(frame)
    if dropped:
        logger.warning("%d manifest rows are missing/unreadable images and are left out", dropped)
    data = StageData(frame, provenance=provenance)
    wanted = available_backbones(features_dir) if backbones is None else backbones
    for slug in wanted:
        path = embeddings_path(features_dir, slug)
        table = read_embeddings(path)
        _check_inputs_digest(table.provenance, provenance, path)
        data.embeddings[slug] = _aligned(table.keys, table.vectors, frame, path)
        data.embedding_provenance[slug] = table.provenance
    return data


def _with_extra(data: StageData, extra: StageData, folder: Path) -> StageData:
    """``data`` plus the train rows of ``extra``: same backbones, same preprocessing and weights,
    image names never shared (stage 1 checked them; a hand-built folder may not be)."""
    name = extra.dataset
    if name == data.dataset or name in data.extra_sources:
        raise ContractError(
            f"The extra data in {folder} has the source name {name!r}, already used by another "
            "source. Give each dataset folder a distinct name."
        )
    for slug, prov in data.embedding_provenance.items():
        theirs = extra.embedding_provenance[slug]
        for key in ("weights", "preprocessing", "tta_views", "precision"):
            if comparable_provenance(prov.get(key)) != comparable_provenance(theirs.get(key)):
                raise ContractError(
                    f"{slug}: the extra data in {folder} was embedded with other {key} "
                    f"({theirs.get(key)}) than the primary data ({prov.get(key)}); their features "
                    f"would not be comparable. Rerun stage 1 with the same settings. {REBUILD_HINT}"
                )
    rows = (extra.frame["split"] == "train").to_numpy()
    shared = set(extra.frame.loc[rows, "image_name"]) & set(data.frame["image_name"])
    if shared:
        raise ContractError(
            f"{len(shared)} image name(s) of the extra data in {folder} are also in another "
            f"source, e.g. {sorted(shared)[:5]}. Rerun stage 1 with --drop-extra-duplicates (./run_all.sh or python -m stage1_embed)."
        )
    frame = pd.concat([data.frame, extra.frame[rows]], ignore_index=True)
    embeddings = {
        slug: np.concatenate([vectors, extra.embeddings[slug][rows]])
        for slug, vectors in data.embeddings.items()
    }
    return StageData(
        frame, embeddings, data.provenance, data.embedding_provenance,
        [*data.extra_sources, name],
    )  # fmt: skip


def comparable_provenance(value: Any) -> Any:
    """Provenance values without file locations (the same weights may sit in two places)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "location"}
    return value


def _check_csv_unchanged(provenance: dict[str, Any], manifest_path: Path) -> None:
    """Stage 1 read a CSV; if that file has changed since, the features are stale."""
    csv, recorded = provenance.get("train_csv"), provenance.get("train_csv_sha256")
    if not csv or not recorded or not Path(csv).is_file():
        return
    if file_sha256(Path(csv)) != recorded:
        raise ContractError(
            f"{csv} has changed since stage 1 wrote {manifest_path}: the features are stale. "
            f"{REBUILD_HINT}"
        )


def _check_inputs_digest(emb: dict[str, Any], manifest: dict[str, Any], path: Path) -> None:
    if emb.get("inputs_digest") != manifest.get("inputs_digest"):
        raise ContractError(
            f"{path} was computed from a different input than manifest.parquet (inputs digests "
            f"differ: the images or CSV changed since). {REBUILD_HINT}"
        )


def _aligned(
    keys: pd.DataFrame, vectors: np.ndarray, frame: pd.DataFrame, path: Path
) -> np.ndarray:
    """Rows of ``vectors`` in ``frame`` order; every usable image must have an embedding."""
    position = pd.Series(
        np.arange(len(keys)), index=pd.MultiIndex.from_frame(keys[["split", "image_name"]])
    )
    if position.index.has_duplicates:
        raise ContractError(f"{path} has duplicate (split, image_name) rows. {REBUILD_HINT}")
    wanted = pd.MultiIndex.from_frame(frame[["split", "image_name"]])
    found = position.reindex(wanted)
    if found.isna().any():
        missing = [f"{s}/{n}" for s, n in wanted[found.isna().to_numpy()][:5]]
        raise ContractError(
            f"{path} lacks embeddings for {int(found.isna().sum())} image(s) the manifest lists as "
            f"readable, e.g. {missing}. {REBUILD_HINT}"
        )
    extra = len(keys) - int(found.notna().sum())
    if extra:
        logger.info(
            "%s: %d embeddings of images not usable in this manifest are ignored", path.name, extra
        )
    return vectors[found.to_numpy(dtype=np.int64)]
