"""Embed one backbone over all images: resumable parts, shards, progress, timing."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .backbones import Backbone
from .batch_decode import BatchDecoder, RawDataset, collate_raw
from .common import IMAGE_LIBRARIES, code_digest, json_digest, library_versions
from .cpu_pipeline import cpu_threads, embed_batch, embedded_in_threads
from .engines import make_embedder
from .extract import Batch, ImageDataset, make_loader, plan_batches
from .parts import Failure, PartsFolder, RowKey
from .preprocess import RESIZE_ENGINE, Preprocess
from .progress import progress_bar
from .schema import (
    EMBEDDINGS_DIR,
    SCHEMA_VERSION,
    embeddings_path,
    read_provenance,
)
from .sources import ImageKey, ImageRef, ImageSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSettings:
    """How to run extraction; only ``tta``, ``precision`` and ``chunk_size`` change the result."""

    batch_size: int = 32
    num_workers: int = 2
    chunk_size: int = 1024
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast, CUDA only)
    tta: tuple[str, ...] = ()
    num_shards: int = 1
    shard_index: int = 0
    progress: bool = True
    engine: str = "torch"  # torch | onnx (resolved from --engine; engines.py)
    decode: str = (
        "pil"  # pil (CPU, in workers) | torchvision (batched, on the device; batch_decode.py)
    )
    channel_orders: tuple[tuple[str, str], ...] = ()  # (split, stored order): colour.py


@dataclass
class BackboneResult:
    slug: str
    status: str  # computed | cached | waiting-for-shards
    n_images: int
    seconds: float
    device: str
    failures: list[Failure] = field(default_factory=list)
    parts: PartsFolder | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    reused: pa.Table | None = None  # rows of the previous file whose images are unchanged

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def backbone_provenance(
    backbone: Backbone, settings: EmbedSettings, digest: str, n_images: int
) -> dict[str, Any]:
    """Everything that determines the embeddings, plus library versions; hashed for reruns."""
    w = backbone.weights
    relevant = {
        "backbone_spec": backbone.spec.text,
        "slug": backbone.spec.slug,
        "architecture": backbone.architecture,
        "num_features": backbone.num_features,
        "weights": {"source": w.source, "location": w.location, "sha256": w.sha256},
        "pretrained": w.pretrained,
        "preprocessing": jsonable(backbone.data_config),
        "tta_views": list(settings.tta),
        "precision": settings.precision,
        "engine": settings.engine,
        "decode": settings.decode,
        "channel_order": dict(settings.channel_orders),
        "resize": RESIZE_ENGINE,
        "chunk_size": settings.chunk_size,
        "inputs_digest": digest,
        "schema_version": SCHEMA_VERSION,
        # what shapes the pixels and the embeddings besides the settings: the decoding,
        # preprocessing and embedding code and the libraries under it (common.code_digest)
        "code": code_digest("stage1_embed"),
        "libraries": library_versions(IMAGE_LIBRARIES) | {"python": sys.version.split()[0]},
    }
    # what turns an image into its embedding, whatever the images are: a row embedded under the
    # same embedder digest from the same bytes is reused by a rerun on changed inputs
    embedder = {k: v for k, v in relevant.items() if k not in ("inputs_digest", "chunk_size")}
    return {
        **relevant,
        "settings_digest": json_digest(relevant),
        "embedder_digest": json_digest(embedder),
        "n_images": n_images,
    }


def embed_backbone(
    backbone: Backbone,
    source: ImageSource,
    refs: list[ImageRef],
    features_dir: Path,
    digest: str,
    settings: EmbedSettings,
    contents: Mapping[ImageKey, str],
) -> BackboneResult:
    """Embed this shard's missing chunks of the images whose content has no embedding yet; the
    caller checks failures and assembles (with the reused rows)."""
    slug = backbone.spec.slug
    provenance = backbone_provenance(backbone, settings, digest, len(refs))
    final = embeddings_path(features_dir, slug)
    previous = _previous(final)
    if previous.get("settings_digest") == provenance["settings_digest"]:
        logger.info(
            "%s: embeddings are up to date (same image contents and settings), skipping", slug
        )
        failures = [tuple(f) for f in previous.get("failures", [])]
        return BackboneResult(slug, "cached", 0, 0.0, settings.device, failures, None, previous)
    reused = None
    if previous.get("embedder_digest") == provenance["embedder_digest"]:
        reused = _unchanged_rows(final, refs, contents)
    if reused is not None:
        done = set(
            zip(
                reused.column("split").to_pylist(),
                reused.column("image_name").to_pylist(),
                strict=True,
            )
        )
        refs = [r for r in refs if (r.split, r.image_name) not in done]
        logger.info("%s: %d embedding(s) of unchanged images reused, %d image(s) to embed",
                    slug, len(reused), len(refs))  # fmt: skip
    chunks = plan_batches(len(refs), settings.chunk_size, settings.batch_size)
    parts = PartsFolder(
        Path(features_dir)
        / EMBEDDINGS_DIR
        / ".parts"
        / f"{slug}-{provenance['settings_digest'][:12]}",
        provenance["settings_digest"],
        len(chunks),
        backbone.num_features,
    )
    todo = [c for c in parts.missing_chunks() if c % settings.num_shards == settings.shard_index]
    started = time.perf_counter()
    n_done, engine_used = _run_chunks(
        backbone, source, refs, chunks, todo, parts, settings, contents
    )
    seconds = time.perf_counter() - started
    provenance["engine_used"] = engine_used or settings.engine
    complete = not parts.missing_chunks()
    status = "computed" if complete else "waiting-for-shards"
    failures = parts.failures() if complete else []
    return BackboneResult(
        slug, status, n_done, seconds, settings.device, failures, parts, provenance, reused
    )


def _run_chunks(
    backbone: Backbone,
    source: ImageSource,
    refs: list[ImageRef],
    chunks: list[list[list[int]]],
    todo: list[int],
    parts: PartsFolder,
    settings: EmbedSettings,
    contents: Mapping[ImageKey, str],
) -> tuple[int, str | None]:
    """Embed the ``todo`` chunks; returns the image count and the engine that ran."""
    if not todo:
        return 0, None
    device = torch.device(settings.device)
    preprocess = Preprocess.from_data_config(backbone.data_config)
    batches = [batch for c in todo for batch in chunks[c]]
    dataset = ImageDataset(source, refs, preprocess)
    iter_batches = _decoded_batches(dataset, batches, settings, device)
    total = sum(len(b) for b in batches)
    bar = progress_bar(total, backbone.spec.slug, settings.progress)
    first = next(iter_batches)
    sample = first.pixels[:8] if first.pixels is not None else None  # checks a new ONNX export
    # Decoding here (no worker processes) for ONNX Runtime: one thread per core runs whole
    # batches, each with a single-threaded ONNX Runtime run (cpu_pipeline.py).
    threads = cpu_threads() if settings.num_workers == 0 and settings.decode != "torchvision" else 0
    embedder, engine_used = make_embedder(
        backbone, settings.engine, device, settings.tta, _amp(settings), sample,
        onnx_threads=1 if threads else None,
    )  # fmt: skip
    embedded: Iterator[tuple[Batch, np.ndarray | None]]
    if engine_used == "onnx" and threads:
        later = embedded_in_threads(dataset, batches[1:], embedder, threads)
        embedded = itertools.chain([embed_batch(first, embedder)], later)
    else:
        embedded = (
            embed_batch(batch, embedder) for batch in itertools.chain([first], iter_batches)
        )
    # torch only resizes single images beside ONNX Runtime: its own thread pool would contend.
    with torch_threads(1 if engine_used == "onnx" else None):
        for chunk in todo:
            batches_of_chunk = itertools.islice(embedded, len(chunks[chunk]))  # lazily: pixels
            _write_chunk(chunk, batches_of_chunk, refs, contents, parts, bar)  # are not kept
    bar.close()
    return total, engine_used


def _decoded_batches(
    dataset: ImageDataset, batches: list[list[int]], settings: EmbedSettings, device: torch.device
) -> Iterator[Batch]:
    """The batches as tensors: decoded by the loader's workers (PIL), or bitstreams read there
    and decoded a batch at a time on the device (torchvision's nvJPEG)."""
    pin = device.type == "cuda"
    if settings.decode != "torchvision":
        return iter(make_loader(dataset, batches, settings.num_workers, pin))
    source, refs, preprocess = dataset.source, dataset.refs, dataset.preprocess
    decoder = BatchDecoder(source, refs, preprocess, device)
    raw = RawDataset(source, refs, preprocess)
    return map(decoder, make_loader(raw, batches, settings.num_workers, pin, collate_raw))


def _write_chunk(
    chunk: int, embedded: Iterator[tuple[Batch, np.ndarray | None]], refs: list[ImageRef],
    contents: Mapping[ImageKey, str], parts: PartsFolder, bar: Any,
) -> None:  # fmt: skip
    """One resumable part: the chunk's embedded rows, keyed by content, and its failures."""
    keys: list[RowKey] = []
    vectors: list[np.ndarray] = []
    failures: list[Failure] = []
    for batch, batch_vectors in embedded:
        if batch_vectors is not None:
            vectors.append(batch_vectors)
            keys += [_row_key(refs[i], contents) for i in batch.indices]
        failures += [(refs[i].split, refs[i].image_name, e) for i, e in batch.failures]
        bar.update(len(batch.indices) + len(batch.failures))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, parts.width), np.float32)
    parts.write_part(chunk, keys, matrix, failures)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op threads set to ``count`` (None: leave them)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _amp(settings: EmbedSettings) -> torch.dtype | None:
    if settings.precision == "fp32" or not settings.device.startswith("cuda"):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[settings.precision]


def _row_key(ref: ImageRef, contents: Mapping[ImageKey, str]) -> RowKey:
    return ref.split, ref.image_name, contents.get((ref.split, ref.image_name))


def _previous(path: Path) -> dict[str, Any]:
    """The provenance of the embedding file already there ({} if none or unreadable)."""
    if not path.is_file():
        return {}
    try:
        return read_provenance(path)
    except Exception:  # unreadable file: recompute it
        return {}


def _unchanged_rows(
    path: Path, refs: list[ImageRef], contents: Mapping[ImageKey, str]
) -> pa.Table | None:
    """Rows of the previous file for images still wanted whose bytes are the same (None: no
    usable previous file)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid):
        return None
    if "content_sha256" not in table.column_names:
        return None
    wanted = {(r.split, r.image_name, contents.get((r.split, r.image_name))) for r in refs}
    rows = zip(table.column("split").to_pylist(), table.column("image_name").to_pylist(),
               table.column("content_sha256").to_pylist(), strict=True)  # fmt: skip
    keep = [key in wanted and key[2] is not None for key in rows]
    return table.filter(pa.array(keep, pa.bool_())).replace_schema_metadata(None)


def jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, other objects as text)."""
    return json.loads(
        json.dumps(value, default=lambda v: list(v) if isinstance(v, tuple) else str(v))
    )
