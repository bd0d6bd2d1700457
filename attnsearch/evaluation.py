"""Evaluation: a model's top-1/top-5 accuracy and mean loss on validation images, and which images an epoch scores.

:func:`evaluate` scores a model on its own, as a user does after a run; the trainer (:mod:`attnsearch.train`)
scores the same way after each epoch it validates, on the whole validation set or, before the last epoch, on the
fixed subset ``epoch_val_size`` asks for. Evaluation runs in eval mode without gradients, draws no random numbers
and restores the model's train/eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .candidate import PRECISIONS, TrainRecipe
from .data.dataset import Dataset
from .data.loader import Batches, normalization

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Top-1/top-5 accuracy and mean loss of a model on a set of images.

    Example:
        >>> Evaluation(accuracy=0.5, top5=None, loss=0.69, count=2).accuracy
        0.5
    """

    accuracy: float  # top-1, 0..1
    top5: float | None = None  # None when the model has fewer than 5 classes
    loss: float = math.nan  # mean cross-entropy, without label smoothing
    count: int = 0  # images evaluated


def evaluate(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Evaluation:
    """Evaluate ``model`` (in eval mode, without gradients, on its own device) on a validation set.

    ``data`` is a :class:`Dataset` (its validation split; the normalisation defaults to its training images'
    statistics, as in training) or a pair of uint8 images (N, 3, H, W) and labels, with ``mean`` and ``std``
    required. No augmentation. The model's train/eval mode is restored afterwards.

    Example:
        >>> images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(48, 6))
        >>> mean, std = normalization(images)
        >>> result = evaluate(model, (images, torch.zeros(8, dtype=torch.int64)), mean=mean, std=std)
        >>> result.count, result.top5 is not None
        (8, True)
    """
    device = _device_of(model)
    if isinstance(data, Dataset):
        images, labels = data.val_x, data.val_y
        if mean is None or std is None:
            mean, std = normalization(data.train_x)
    else:
        images, labels = data
        if mean is None or std is None:
            raise ValueError("evaluating tensors needs mean and std: the training images' normalisation")
    if images.shape[0] == 0:
        raise ValueError("nothing to evaluate: no images")
    batches = Batches(images.to(device), labels.to(device), batch_size, mean=mean, std=std, channels_last=channels_last)
    return _evaluate(model, batches, _use_bf16(precision, device))


def _epoch_subset(data: Dataset, recipe: TrainRecipe, mean: torch.Tensor, std: torch.Tensor) -> Batches | None:
    """The validation images scored after every epoch but the last, when ``recipe.epoch_val_size`` caps them.

    The same images for every epoch, trial and seed (a fixed draw, in their original order), so that the pruner
    compares like with like; None when the whole set is to be scored.
    """
    n, k = data.val_x.shape[0], recipe.epoch_val_size
    if k is None or k >= n:
        return None
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].sort().values.to(data.val_x.device)
    images, labels = data.val_x[pick], data.val_y[pick]
    return Batches(images, labels, _eval_batch(recipe), mean=mean, std=std, channels_last=recipe.channels_last)


def _eval_batch(recipe: TrainRecipe) -> int:
    # no activations are kept for backward: twice the training batch fits, and at least 256 (a VGG16 at width
    # 0.25 scores 32x32 images about 10% faster on a 2-core CPU in batches of 256 than of 128)
    return max(2 * recipe.batch_size, 256)


def _evaluate(model: nn.Module, batches: Batches, bf16: bool) -> Evaluation:
    was_training = model.training
    model.eval()
    device = batches.images.device
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # counts stay on the device until the end: one sync per evaluation
            loss_sum = torch.zeros((), device=device)
            top1 = torch.zeros((), dtype=torch.int64, device=device)
            top5 = torch.zeros((), dtype=torch.int64, device=device)
            classes = 0
            for x, y in batches:
                logits = model(x).float()  # (B, classes)
                classes = logits.shape[1]
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                hits = logits.topk(min(5, classes), dim=1).indices == y[:, None]  # (B, k)
                top1 += hits[:, 0].sum()
                top5 += hits.any(dim=1).sum()
    finally:
        model.train(was_training)
    count = batches.images.shape[0]
    return Evaluation(
        accuracy=top1.item() / count,
        top5=top5.item() / count if classes >= 5 else None,
        loss=loss_sum.item() / count,
        count=count,
    )


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
