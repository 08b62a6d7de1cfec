"""Resumable, shardable output: one Parquet part per chunk of images, assembled at the end.

A part is written atomically once its chunk is embedded, so a killed run loses at most the chunk in
flight; shards write disjoint parts into the same folder; assembling streams the parts, in chunk
order, into the final file (atomic rename), so the result is the same however it was split.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .common import atomic_path, crash_point
from .schema import METADATA_KEY, embedding_schema, read_provenance, with_provenance

Failure = tuple[str, str, str]  # (split, image_name, error)
RowKey = tuple[str, str, str | None]  # (split, image_name, content sha256)


@dataclass(frozen=True)
class PartsFolder:
    """The parts of one backbone under one settings digest."""

    folder: Path
    settings_digest: str
    n_chunks: int
    width: int

    def part_path(self, chunk: int) -> Path:
        return self.folder / f"part-{chunk:05d}.parquet"

    def has_part(self, chunk: int) -> bool:
        path = self.part_path(chunk)
        try:
            meta = read_provenance(path)
        except Exception:  # unreadable or torn part: it is simply redone
            return False
        return meta.get("settings_digest") == self.settings_digest and meta.get("chunk") == chunk

    def missing_chunks(self) -> list[int]:
        return [c for c in range(self.n_chunks) if not self.has_part(c)]

    def write_part(
        self, chunk: int, keys: list[RowKey], vectors: np.ndarray, failures: list[Failure]
    ) -> None:
        meta = {"settings_digest": self.settings_digest, "chunk": chunk, "failures": failures}
        table = _table(keys, vectors, self.width, meta)
        with atomic_path(self.part_path(chunk)) as tmp:
            pq.write_table(table, tmp)
        crash_point("part")

    def failures(self) -> list[Failure]:
        found: list[Failure] = []
        for chunk in range(self.n_chunks):
            found += [tuple(f) for f in read_provenance(self.part_path(chunk))["failures"]]
        return found

    def assemble(
        self, target: Path, provenance: dict[str, Any], reused: pa.Table | None = None
    ) -> None:
        """Stream the ``reused`` rows (unchanged images of the previous file), then all parts in
        chunk order, into ``target``; then delete the parts."""
        schema = with_provenance(embedding_schema(self.width), provenance)
        with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            if reused is not None and len(reused):
                writer.write_table(reused.select(schema.names).cast(schema))
            for chunk in range(self.n_chunks):
                part = pq.read_table(self.part_path(chunk))
                writer.write_table(part.replace_schema_metadata(schema.metadata))
        shutil.rmtree(self.folder, ignore_errors=True)


def _table(keys: list[RowKey], vectors: np.ndarray, width: int, meta: dict[str, Any]) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(flat, width)
    schema = embedding_schema(width).with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    return pa.table(
        [
            pa.array([k[1] for k in keys], pa.string()),
            pa.array([k[0] for k in keys], pa.string()),
            embedding,
            pa.array([k[2] for k in keys], pa.string()),
        ],
        schema=schema,
    )
