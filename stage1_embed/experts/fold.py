"""Fine-tune one fold: AdamW with warm-up and cosine decay, balanced loss, epoch chosen on an
inner patient split, a checkpoint after every epoch (a killed run resumes there), TTA at prediction,
optionally an exponential moving average of the weights in their place, layer-wise learning rates
and mixup.

Deterministic on the CPU for a given seed: each epoch reseeds torch from (seed, fold, epoch), so a
resumed run draws the same batches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from ..common import atomic_path, crash_point
from ..extract import _view
from .images import ImageStore, TrainingSet
from .recipe import Recipe

logger = logging.getLogger(__name__)


class Classifier(torch.nn.Module):
    """A pooled backbone and one logit; normalisation inside, so it takes uint8 images."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: torch.nn.Module,
        num_features: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, torch.nn.Linear(num_features, 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = ((pixels.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x)).squeeze(1)


@dataclass
class FoldOutcome:
    best_epoch: int
    inner_aucs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def train_fold(
    model: Classifier, store: ImageStore, fit: np.ndarray, fit_y: np.ndarray, stop: np.ndarray,
    stop_y: np.ndarray, recipe: Recipe, device: torch.device, folder: Path, fold: int,
    workers: int = 0,
) -> tuple[Classifier, FoldOutcome]:  # fmt: skip
    """Train with checkpoints in ``folder``; return the model at its best inner-AUC epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.to(device).to(memory_format=torch.channels_last)
    drop_last = len(fit) > recipe.batch_size  # no last batch of a few images
    steps_per_epoch = len(fit) // recipe.batch_size if drop_last else 1  # the loader's length
    optimizer = torch.optim.AdamW(
        _param_groups(model, recipe), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = _warmup_cosine(optimizer, recipe, steps_per_epoch)
    n_pos = max(1.0, float(fit_y.sum()))
    pos_weight = math.sqrt((len(fit_y) - n_pos) / n_pos) if recipe.balance == "weight" else 1.0
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    # timm's ModelEmaV3: the average is what is scored and kept (its first update copies)
    ema = ModelEmaV3(model, decay=recipe.ema) if recipe.ema else None
    outcome, best_state, start, schedule_step = FoldOutcome(best_epoch=0), None, 0, 0
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.is_file():  # resume after the last finished epoch
        start, outcome, best_state = _resume(checkpoint, model, optimizer, schedule, ema, device)
        schedule_step = start * steps_per_epoch
        logger.info("fold %d: resuming after epoch %d", fold, start)
    autocast = torch.autocast(
        device.type, torch.bfloat16, enabled=recipe.precision == "bf16" and device.type == "cuda"
    )
    scored = ema.module if ema is not None else model
    for epoch in range(start, recipe.epochs):
        torch.manual_seed(recipe.seed * 100_003 + fold * 1_009 + epoch)
        loader = DataLoader(TrainingSet(store, fit, fit_y, recipe), batch_size=recipe.batch_size,
                            shuffle=True, num_workers=workers, drop_last=drop_last)  # fmt: skip
        loss, schedule_step = _one_epoch(model, loader, loss_fn, optimizer, schedule, schedule_step,
                                         autocast, device, ema, recipe.mixup)  # fmt: skip
        outcome.losses.append(loss)
        inner = predict(scored, store, stop, device, (), recipe)
        outcome.inner_aucs.append(
            float(roc_auc_score(stop_y, inner)) if len(set(stop_y)) > 1 else float("nan")
        )
        if best_state is None or outcome.inner_aucs[-1] >= outcome.inner_aucs[outcome.best_epoch]:
            outcome.best_epoch = epoch
            best_state = {
                k: v.detach().clone().contiguous() for k, v in scored.state_dict().items()
            }
            with atomic_path(folder / "best.safetensors") as tmp:
                save_file(best_state, str(tmp))
        logger.info("fold %d epoch %d/%d: loss %.4f, inner AUC %.4f (best epoch %d)", fold, epoch + 1,
                    recipe.epochs, outcome.losses[-1], outcome.inner_aucs[-1], outcome.best_epoch + 1)  # fmt: skip
        _save_checkpoint(checkpoint, model, optimizer, schedule, ema, epoch, outcome)
        crash_point(f"checkpoint-fold{fold}")
    assert best_state is not None
    best = copy.deepcopy(model)
    best.load_state_dict(best_state)
    return best.eval(), outcome


def _save_checkpoint(
    checkpoint: Path, model: Classifier, optimizer: torch.optim.Optimizer,
    schedule: CosineLRScheduler, ema: ModelEmaV3 | None, epoch: int, outcome: FoldOutcome,
) -> None:  # fmt: skip
    """Everything a killed run needs to go on after ``epoch`` as if it had never stopped."""
    with atomic_path(checkpoint) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch, "best_epoch": outcome.best_epoch,
                    "inner_aucs": outcome.inner_aucs, "losses": outcome.losses,
                    "ema": ema.state_dict() if ema is not None else None}, tmp)  # fmt: skip


def _resume(
    checkpoint: Path, model: Classifier, optimizer: torch.optim.Optimizer,
    schedule: CosineLRScheduler, ema: ModelEmaV3 | None, device: torch.device,
) -> tuple[int, FoldOutcome, dict[str, torch.Tensor]]:  # fmt: skip
    """Load the last finished epoch's state; the first epoch to run, the outcome so far, the best
    weights."""
    saved = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(saved["model"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    outcome = FoldOutcome(
        int(saved["best_epoch"]), list(saved["inner_aucs"]), list(saved["losses"])
    )
    best = load_file(str(checkpoint.parent / "best.safetensors"), device=str(device))
    return int(saved["epoch"]) + 1, outcome, best


def _one_epoch(
    model: Classifier, loader: DataLoader, loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer, schedule: CosineLRScheduler, step: int, autocast: torch.autocast,
    device: torch.device, ema: ModelEmaV3 | None = None, mixup: float = 0.0,
) -> tuple[float, int]:  # fmt: skip
    """One pass over ``loader``; the mean loss and the schedule's step after it."""
    model.train()
    total, seen = 0.0, 0
    for pixels, labels in loader:
        pixels, labels = pixels.to(device, non_blocking=True), labels.to(device).float()
        if mixup:
            pixels, labels = _mix(pixels, labels, mixup)
        with autocast:
            loss = loss_fn(model(pixels).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step_update(step := step + 1)
        if ema is not None:
            ema.update(model, step)
        total, seen = total + float(loss.detach()) * len(labels), seen + len(labels)
    return total / max(1, seen), step


def _param_groups(model: Classifier, recipe: Recipe) -> list[dict[str, Any]]:
    """One rate for all weights; with ``layer_decay`` < 1, timm's layer-wise groups for the
    backbone (its ``lr_scale`` per block, which timm's scheduler applies) and the new head at
    the full rate."""
    if recipe.layer_decay >= 1:
        return [{"params": list(model.parameters())}]
    groups = param_groups_layer_decay(
        model.backbone, recipe.weight_decay, layer_decay=recipe.layer_decay
    )
    return [*groups, {"params": list(model.head.parameters()), "lr_scale": 1.0}]


def _mix(
    pixels: torch.Tensor, labels: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of each image with the batch's mirror image (first with last) and the labels alike.
    By hand rather than timm's ``Mixup``: that draws from NumPy's global generator, which the
    per-epoch reseeding of torch does not cover, so a resumed run would mix differently."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    mixed = pixels.float() * lam + pixels.flip(0).float() * (1 - lam)
    return mixed, labels * lam + labels.flip(0) * (1 - lam)


@torch.inference_mode()
def predict(
    model: Classifier, store: ImageStore, rows: np.ndarray, device: torch.device,
    tta: Sequence[str], recipe: Recipe,
) -> np.ndarray:  # fmt: skip
    """Malignancy probability per row: the mean over the original and the TTA views."""
    model.eval()
    out = []
    autocast = torch.autocast(
        device.type, torch.bfloat16, enabled=recipe.precision == "bf16" and device.type == "cuda"
    )
    for start in range(0, len(rows), recipe.batch_size * 2):
        pixels = torch.stack([store[r] for r in rows[start : start + recipe.batch_size * 2]]).to(
            device
        )
        with autocast:
            probs = torch.sigmoid(model(pixels).float())
            for view in tta:
                probs += torch.sigmoid(model(_view(pixels, view)).float())
        out.append((probs / (1 + len(tta))).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> CosineLRScheduler:
    """timm's schedule, stepped per batch: a linear warm-up to ``lr`` over ``warmup_epochs``,
    then a cosine decay to 1% of it at the last step."""
    warmup = max(1, int(recipe.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, recipe.epochs * steps_per_epoch)
    return CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=0.01 * recipe.lr,
                             warmup_t=warmup, warmup_lr_init=recipe.lr / warmup, warmup_prefix=True,
                             t_in_epochs=False)  # fmt: skip
