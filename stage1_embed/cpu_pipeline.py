"""Stage 1 on a CPU with ONNX Runtime: one thread per core decodes a whole batch and embeds it.

Decoding in the main thread and running ONNX Runtime on all cores leaves every core idle while a
batch is decoded, and a decode thread beside ONNX Runtime's own thread pool stalls its
synchronised kernels. Here each worker thread runs the whole chain for one batch (read, decode,
resize, a single-threaded ONNX Runtime run); PIL, torch and ONNX Runtime release the GIL, so the
cores stay busy and decoding overlaps inference (~1.2x on 2 cores, benchmarks/README.md).
Batches come back in their order, so chunk contents and failures are as the sequential path's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .common import usable_cores
from .extract import Batch, ImageDataset, collate


def cpu_threads() -> int:
    """One thread per core this process may use (affinity and cgroup quota)."""
    return usable_cores()


def embed_batch(
    batch: Batch, embed: Callable[[torch.Tensor], np.ndarray]
) -> tuple[Batch, np.ndarray | None]:
    """The batch and its embeddings (None when every image of it failed to read)."""
    return batch, embed(batch.pixels) if batch.pixels is not None else None


def embedded_in_threads(
    dataset: ImageDataset,
    batches: Sequence[list[int]],
    embed: Callable[[torch.Tensor], np.ndarray],
    threads: int,
) -> Iterator[tuple[Batch, np.ndarray | None]]:
    """(batch, its embeddings) for each batch of dataset indices, in order; ``embed`` must be
    safe to call from several threads (an ONNX Runtime session is)."""

    def work(indices: list[int]) -> tuple[Batch, np.ndarray | None]:
        batch, vectors = embed_batch(collate([dataset[i] for i in indices]), embed)
        return Batch(batch.indices, None, batch.failures), vectors  # pixels are not kept

    pending: deque[Future[tuple[Batch, np.ndarray | None]]] = deque()
    todo = iter(batches)
    with ThreadPoolExecutor(threads, thread_name_prefix="stage1-embed") as pool:
        try:
            for indices in todo:
                pending.append(pool.submit(work, indices))
                if len(pending) >= 2 * threads:
                    break
            while pending:
                yield pending.popleft().result()
                following = next(todo, None)
                if following is not None:
                    pending.append(pool.submit(work, following))
        finally:
            for future in pending:
                future.cancel()
