"""Embeddings from inside the network: the average-pooled outputs of chosen stages.

The pooled features a classifier head sees are tuned to ImageNet's classes; the stages before it
hold more general texture and colour (what that is worth: benchmarks/README.md, "Image feature
candidates"). timm's ``forward_intermediates`` gives the stages of any model that has
``feature_info``, so no layer is named by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

HEAD = "head"


class StageFeatures(nn.Module):
    """A timm model whose output is the concatenation, in network order, of the head's pooled
    features (when ``"head"`` is among ``stages``) and the average-pooled outputs of the named
    stages (``"last"``, ``"last-1"``, ... counted from the end of ``feature_info``);
    ``head_width`` is the width of the head's pooled features (twice the channels for catavgmax)."""

    def __init__(self, model: Any, stages: Sequence[str], head_width: int) -> None:
        super().__init__()
        self.model: Any = model  # a timm model (its stage methods are not typed on nn.Module)
        self.head = HEAD in stages
        self.indices = stage_indices(model, stages)
        info = model.feature_info
        widths = [int(info[i]["num_chs"]) for i in self.indices]
        self.num_features = sum(widths) + (head_width if self.head else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extract = self.model.forward_intermediates
        if not self.head:  # the later blocks and the head are never run
            maps = extract(x, indices=self.indices, intermediates_only=True, stop_early=True)
            return torch.cat([m.mean((2, 3)) for m in maps], 1)
        final, maps = extract(x, indices=self.indices)
        pooled = self.model.forward_head(final, pre_logits=True)
        return torch.cat([pooled, *(m.mean((2, 3)) for m in maps)], 1)


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
