"""Inference engines for the frozen backbones: torch (CUDA, or any device) and ONNX Runtime (CPU).

ONNX Runtime runs the same weights 2.5-3x faster than torch eager on a CPU (benchmarks/README.md).
Each backbone is exported once per (weights sha256, input size) to the cache folder
(``$MELANOMA_STACK_CACHE/onnx``, beside the converted weights), with normalisation inside the graph
so it takes the same uint8 batches as the torch path. At export the ONNX model is checked against
torch on real images from the dataset: below a cosine of 0.9999 the backbone falls back to torch
with a warning. The engine is part of the embeddings' provenance and settings digest: the two
engines agree to ~1e-5, not bit for bit, so their embeddings are separate cache entries.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backbones import Backbone
from .common import atomic_path, atomic_write_text
from .extract import Embedder, _view
from .weights import cache_dir

logger = logging.getLogger(__name__)
OPSET = 17
MIN_COSINE = 0.9999
# ONNX Runtime on a CPU runs these CNNs fastest a few images at a time (activations stay in cache):
# batch 8 gave ~20% more images/s than 32 for Lite0 and Lite2 (benchmarks/README.md). Stage 1's
# batches stay as configured (chunks, failures, progress); the engine splits them.
ONNX_MICRO_BATCH = 8


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(requested: str, device: str) -> str:
    """'auto': ONNX Runtime on a CPU (when installed), torch on CUDA."""
    if requested == "auto":
        return "onnx" if device == "cpu" and onnx_available() else "torch"
    if requested == "onnx" and device != "cpu":
        logger.warning(
            "python -m stage1_embed --engine onnx runs on the CPU here; the %s device is not used",
            device,
        )
    return requested


class _Normalised(torch.nn.Module):
    """uint8 NCHW pixels -> normalised float -> pooled embedding, as one exportable graph."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: torch.nn.Module, data_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(data_config["mean"]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(data_config["std"]).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels.float() - self.mean) / self.std)


class OnnxEmbedder:
    """Same contract as :class:`Embedder`: uint8 batch in, float32 embeddings out (TTA averaged)."""

    def __init__(self, path: Path, tta: Sequence[str] = (), threads: int | None = None) -> None:
        """``threads``: ONNX Runtime's intra-op threads (None: one per core). Stage 1 on a CPU
        uses 1 and calls the embedder from one thread per core instead (see ``cpu_pipeline``)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tta = tuple(tta)
        shape = self.session.get_inputs()[0].shape
        self.input_size = (int(shape[2]), int(shape[3]))

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        features = self._run(pixels)
        for view in self.tta:
            features += self._run(_view(pixels, view))
        return features / (1 + len(self.tta))

    def _run(self, pixels: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(pixels.numpy())
        parts = [
            self.session.run(None, {"pixels": array[start : start + ONNX_MICRO_BATCH]})[0]
            for start in range(0, len(array), ONNX_MICRO_BATCH)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)


def onnx_path(backbone: Backbone) -> Path:
    """The cached export of this backbone at its input size."""
    size = int(backbone.data_config["input_size"][-1])
    digest = (backbone.weights.sha256 or "random")[:16]
    config = backbone.data_config  # what changes the network's output, beside the weights
    pool = f"-{config['global_pool']}" if "global_pool" in config else ""
    pool += f"-stages-{'-'.join(config['stages'])}" if "stages" in config else ""
    pool += f"-{config['stage_pooling']}" if "stage_pooling" in config else ""
    name = f"{backbone.architecture}-{digest}-{size}px{pool}-opset{OPSET}-torch{torch.__version__.split('+')[0]}"
    return cache_dir() / "onnx" / f"{name}.onnx"


def make_embedder(
    backbone: Backbone, engine: str, device: torch.device, tta: Sequence[str],
    amp_dtype: torch.dtype | None, sample: torch.Tensor | None, onnx_threads: int | None = None,
) -> tuple[Embedder | OnnxEmbedder, str]:  # fmt: skip
    """The embedder for ``engine``, and the engine actually used (ONNX may fall back to torch).

    ``sample`` (a few real uint8 images) checks a new export against torch; ``onnx_threads`` is
    ONNX Runtime's intra-op thread count."""
    torch_embedder = Embedder(backbone.model, backbone.data_config, device, tta, amp_dtype)
    if engine != "onnx":
        return torch_embedder, "torch"
    if not backbone.weights.sha256:
        logger.warning("%s: weights without a sha256 cannot key an ONNX export; using torch",
                       backbone.spec.slug)  # fmt: skip
        return torch_embedder, "torch"
    path = onnx_path(backbone)
    check = path.with_suffix(".check.json")
    if not path.is_file() or not check.is_file():
        _export(backbone, path)
        cosine = _min_cosine(OnnxEmbedder(path), torch_embedder, sample)
        atomic_write_text(check, json.dumps({"min_cosine": cosine, "threshold": MIN_COSINE}))
    cosine = float(json.loads(check.read_text())["min_cosine"])
    if cosine < MIN_COSINE:
        logger.warning("%s: the ONNX export agrees with torch only to cosine %.6f (< %s); using "
                       "torch", backbone.spec.slug, cosine, MIN_COSINE)  # fmt: skip
        return torch_embedder, "torch"
    return OnnxEmbedder(path, tta, onnx_threads), "onnx"


def _export(backbone: Backbone, path: Path) -> None:
    size = int(backbone.data_config["input_size"][-1])
    wrapper = _Normalised(backbone.model, backbone.data_config).eval().cpu()
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s: exporting to ONNX once (%s)", backbone.spec.slug, path.name)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            wrapper, (example,), str(tmp), input_names=["pixels"], output_names=["embedding"],
            dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def _min_cosine(onnx: OnnxEmbedder, reference: Embedder, sample: torch.Tensor | None) -> float:
    if sample is None or len(sample) == 0:  # no readable image at hand: check on noise
        sample = torch.randint(0, 256, (4, 3, *onnx.input_size), dtype=torch.uint8)
    a, b = onnx(sample), reference(sample)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cosine.min())
