"""The stage 1 -> stage 2 contract: file layout, columns, provenance metadata, validation.

Stage 2 imports from stage 1 only this module, ``folds`` (the shared fold assignment), the error
hierarchy and ``common``, so they must stay free of torch and image code. Every file is keyed by
(split, image_name); no row order carries meaning.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .common import atomic_path
from .errors import ContractError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.parquet"
EMBEDDINGS_DIR = "embeddings"
EXTRA_DIR = "extra"  # OUT/extra/<name>/ holds an extra dataset's stage 1 outputs
METADATA_KEY = b"melanoma_stack"
# Rows stage 2 may use: images that were read, or every row of a metadata-only run.
USABLE_STATUSES = ("ok", "not_read")

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_name", pa.string()),
        ("patient_id", pa.string()),
        ("sex", pa.string()),
        ("age_approx", pa.float64()),
        ("anatom_site_general_challenge", pa.string()),
        ("diagnosis", pa.string()),
        ("target", pa.int8()),
        ("split", pa.string()),
        ("source_format", pa.string()),
        ("relative_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("file_size", pa.int64()),
        ("content_sha256", pa.string()),  # sha256 of the image's stored bytes (content.py)
        ("read_status", pa.string()),  # ok | missing | failed | not_read
        ("read_error", pa.string()),
    ]
)
REBUILD_HINT = "Rebuild the features with `./run_all.sh --stage 1` (or `python -m stage1_embed`)."


@dataclass(frozen=True)
class EmbeddingTable:
    """One backbone's embeddings, keyed by (split, image_name)."""

    keys: pd.DataFrame  # columns split, image_name
    vectors: np.ndarray  # float32, (n_images, width)
    provenance: dict[str, Any]
    path: Path


def inputs_digest(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (split, image_name, content sha256) of the readable images."""
    rows = manifest.loc[manifest["read_status"] == "ok", ["split", "image_name", "content_sha256"]]
    text = "\n".join(f"{s}\t{n}\t{z}" for s, n, z in sorted(rows.itertuples(index=False)))
    return hashlib.sha256(text.encode()).hexdigest()


def backbone_slug(spec: str) -> str:
    """The name a backbone spec's outputs go by: its embedding file and stage 2's column prefix
    (``local-dir:/w/tf_efficientnet_lite0`` -> ``tf_efficientnet_lite0``)."""
    if spec.startswith("local-dir:"):
        base = Path(spec.removeprefix("local-dir:")).name
    elif spec.startswith("hf-hub:"):
        base = spec.removeprefix("hf-hub:")
    else:
        base = spec.partition("@")[0]
    base = base.split("/")[-1].split("@")[0]
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")


def source_name(root: Path) -> str:
    """A file-system-safe source name from a dataset folder's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-") or "extra"


def extra_features_dir(features_dir: Path, extra: Path) -> Path:
    """Where stage 1 writes (and stage 2 reads) the outputs of one extra dataset."""
    return Path(features_dir) / EXTRA_DIR / source_name(extra)


def embeddings_path(features_dir: Path, slug: str) -> Path:
    return Path(features_dir) / EMBEDDINGS_DIR / f"{slug}.parquet"


def embedding_schema(width: int) -> pa.Schema:
    """One row per image; ``content_sha256`` says which bytes were embedded, so a rerun reuses
    the rows of unchanged images and recomputes the others."""
    return pa.schema(
        [
            ("image_name", pa.string()),
            ("split", pa.string()),
            ("embedding", pa.list_(pa.float32(), width)),
            ("content_sha256", pa.string()),
        ]
    )


def with_provenance(schema: pa.Schema, provenance: dict[str, Any]) -> pa.Schema:
    payload = {"schema_version": SCHEMA_VERSION, **provenance}
    return schema.with_metadata({METADATA_KEY: json.dumps(payload, sort_keys=True).encode()})


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance dict stored in a Parquet file's metadata ({} if it has none)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}


def write_manifest(manifest: pd.DataFrame, features_dir: Path, provenance: dict[str, Any]) -> Path:
    """Write ``manifest.parquet`` atomically; ``provenance`` must carry ``inputs_digest``."""
    if "inputs_digest" not in provenance:
        raise ValueError("manifest provenance needs the scan's inputs_digest")
    table = pa.Table.from_pandas(
        manifest[MANIFEST_SCHEMA.names], MANIFEST_SCHEMA, preserve_index=False
    )
    table = table.replace_schema_metadata(with_provenance(MANIFEST_SCHEMA, provenance).metadata)
    target = Path(features_dir) / MANIFEST_FILE
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def read_manifest(features_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate ``manifest.parquet``; raise ContractError naming the fix."""
    path = Path(features_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ContractError(f"No stage 1 manifest at {path}. {REBUILD_HINT}")
    provenance = _checked_provenance(path)
    manifest = pq.read_table(path).to_pandas()
    missing = [c for c in MANIFEST_SCHEMA.names if c not in manifest.columns]
    if missing:
        raise ContractError(f"{path} lacks columns {missing}. {REBUILD_HINT}")
    for column in ("image_name", "patient_id", "split", "read_status"):
        manifest[column] = manifest[column].astype(str)
    manifest["target"] = manifest["target"].astype("Int8")
    return manifest, provenance


def read_embeddings(path: Path) -> EmbeddingTable:
    """Read one backbone's embeddings; refuse wrong schema versions and non-finite values."""
    if not path.is_file():
        raise ContractError(f"Embedding file {path} is missing. {REBUILD_HINT}")
    provenance = _checked_provenance(path)
    table = pq.read_table(path)
    if not {"image_name", "split", "embedding"} <= set(table.column_names):
        raise ContractError(f"{path} is not an embedding file (columns {table.column_names}).")
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size if pa.types.is_fixed_size_list(column.type) else -1
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vectors = vectors.reshape(len(table), width)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        names = table.column("image_name").to_numpy(zero_copy_only=False)[bad][:5].tolist()
        raise ContractError(
            f"{path} holds NaN/inf embeddings for {int(bad.sum())} image(s), e.g. {names}. "
            f"Delete the file and rebuild it. {REBUILD_HINT}"
        )
    keys = table.select(["split", "image_name"]).to_pandas()
    return EmbeddingTable(keys, vectors, provenance, Path(path))


def _checked_provenance(path: Path) -> dict[str, Any]:
    try:
        provenance = read_provenance(path)
    except (OSError, pa.ArrowInvalid, ValueError) as err:
        raise ContractError(
            f"{path} is not a readable Parquet file ({err}). {REBUILD_HINT}"
        ) from err
    version = provenance.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ContractError(
            f"{path} has schema version {version}, this code reads version {SCHEMA_VERSION}. "
            f"It was written by another release of melanoma-stack. {REBUILD_HINT}"
        )
    return provenance
