"""Embeddings from inside the network: the pooled outputs of chosen stages.

The pooled features a classifier head sees are tuned to ImageNet's classes; the stages before it
hold more general texture and colour (what that is worth: benchmarks/README.md, "Image feature
candidates"). timm's ``forward_intermediates`` gives the stages of any model that has
``feature_info``, so no layer is named by hand.

A stage's output here is a block's linear projection, about half of it negative, so besides the
average two poolings are offered (timm's global pools serve the head only): ``pos-neg``, the
averages of each channel's positive and negative parts side by side (average pooling of
CReLU(x), Shang et al. 2016; the plain average is their difference), and ``gem``, the
generalised mean with p = 3 (Radenovic et al. 2018), defined for non-negative maps and so
clamped at zero as in its paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import STAGE_POOLINGS
from .errors import ConfigError

HEAD = "head"
GEM_P, GEM_EPS = 3.0, 1e-6


class StageFeatures(nn.Module):
    """A timm model whose output is the concatenation, in network order, of the head's pooled
    features (when ``"head"`` is among ``stages``) and the pooled outputs of the named stages
    (``"last"``, ``"last-1"``, ... counted from the end of ``feature_info``), each pooled by
    ``pooling`` (one of STAGE_POOLINGS); ``head_width`` is the width of the head's pooled
    features (twice the channels for catavgmax)."""

    def __init__(
        self, model: Any, stages: Sequence[str], head_width: int, pooling: str = "avg"
    ) -> None:
        super().__init__()
        if pooling not in STAGE_POOLINGS:
            raise ConfigError(
                f"Unknown stage pooling {pooling!r}: use {', '.join(STAGE_POOLINGS)}."
            )
        self.model: Any = model  # a timm model (its stage methods are not typed on nn.Module)
        self.head = HEAD in stages
        self.indices = stage_indices(model, stages)
        self.pooling = pooling
        info = model.feature_info
        per_channel = 2 if pooling == "pos-neg" else 1
        widths = [int(info[i]["num_chs"]) * per_channel for i in self.indices]
        self.num_features = sum(widths) + (head_width if self.head else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extract = self.model.forward_intermediates
        if not self.head:  # the later blocks and the head are never run
            maps = extract(x, indices=self.indices, intermediates_only=True, stop_early=True)
            return torch.cat([pool_stage(m, self.pooling) for m in maps], 1)
        final, maps = extract(x, indices=self.indices)
        pooled = self.model.forward_head(final, pre_logits=True)
        return torch.cat([pooled, *(pool_stage(m, self.pooling) for m in maps)], 1)


def pool_stage(feature_map: torch.Tensor, pooling: str) -> torch.Tensor:
    """One stage's (N, C, H, W) map pooled to (N, C), or (N, 2C) for ``pos-neg``."""
    if pooling == "pos-neg":
        return torch.cat([feature_map.clamp(min=0).mean((2, 3)),
                          feature_map.neg().clamp(min=0).mean((2, 3))], 1)  # fmt: skip
    if pooling == "gem":
        return feature_map.clamp(min=GEM_EPS).pow(GEM_P).mean((2, 3)).pow(1 / GEM_P)
    return feature_map.mean((2, 3))


def stage_indices(model: Any, stages: Sequence[str]) -> list[int]:
    """``feature_info`` indices of the named stages, in network order; a clear error for a model
    without stages or a stage it does not have."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        raise ConfigError(f"--stages {','.join(stages)}: {type(model).__name__} has no "
                          "intermediate stages in timm (no feature_info); use --stages head.")  # fmt: skip
    indices = []
    for stage in stages:
        if stage == HEAD:
            continue
        back = int(stage.removeprefix("last") or 0)  # "last" -> 0, "last-2" -> -2
        if -back >= len(info):
            raise ConfigError(f"--stages {stage}: {type(model).__name__} has {len(info)} stages "
                              f"(last to last-{len(info) - 1}).")  # fmt: skip
        indices.append(len(info) - 1 + back)
    return sorted(indices)
