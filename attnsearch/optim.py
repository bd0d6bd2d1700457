"""The optimizer of a recipe, and the learning rate of every step: linear warm-up, then cosine decay, torch's
OneCycleLR or StepLR.

The trainer sets the rate itself before each step (no ``torch.optim.lr_scheduler`` object), so that a budget in
steps or in epochs and a warm-up of a fraction of an epoch are all the same function of the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .candidate import OPTIMIZERS, SCHEDULES, TrainRecipe

__all__ = ["learning_rate", "make_optimizer"]


def learning_rate(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    peak: float,
    schedule: str,
    steps_per_epoch: int = 1,
    step_size: int = 30,
    gamma: float = 0.1,
) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``.

    ``"cosine"``: linear warm-up to ``peak`` over the first ``warmup_steps`` steps (step s uses
    ``peak * (s + 1) / warmup_steps``), then cosine decay towards 0 (step s uses
    ``peak * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2``).
    ``"onecycle"``: the curve of torch's ``OneCycleLR`` (cosine annealing both ways, start at ``peak / 25``, end at
    ``peak / 25e4``), its rise lasting ``warmup_steps`` steps; momentum is not cycled.
    ``"step"``: torch's ``StepLR`` stepped once an epoch, ``peak * gamma ** floor(epoch / step_size)`` with
    ``epoch = step // steps_per_epoch`` (from 0, counted from the start of training), after the same linear
    warm-up as cosine: a warm-up step uses ``peak * (s + 1) / warmup_steps`` whatever its epoch. A ``ValueError``
    for an unknown schedule, a ``step_size`` or ``steps_per_epoch`` below 1, or a ``gamma`` outside (0, 1].

    Example:
        >>> [round(learning_rate(s, total_steps=6, warmup_steps=2, peak=1.0, schedule="cosine"), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
        >>> [learning_rate(s, total_steps=8, warmup_steps=0, peak=1.0, schedule="step", steps_per_epoch=2,
        ...                step_size=2, gamma=0.5) for s in range(8)]
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    """
    if schedule == "cosine":
        if step < warmup_steps:
            return peak * (step + 1) / warmup_steps
        return peak * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps))) / 2
    if schedule == "onecycle":
        initial = peak / 25
        final = initial / 1e4
        if step < warmup_steps:
            return initial + (peak - initial) * (1 - math.cos(math.pi * step / warmup_steps)) / 2
        span = max(1, total_steps - 1 - warmup_steps)
        return final + (peak - final) * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span))) / 2
    if schedule == "step":
        if step_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"step_size and steps_per_epoch must be at least 1, got {step_size}, {steps_per_epoch}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if step < warmup_steps:
            return peak * (step + 1) / warmup_steps
        return peak * gamma ** (step // steps_per_epoch // step_size)
    raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """SGD (nesterov, momentum 0.9) or AdamW; weight decay on weights of 2 or more dimensions only.

    Biases and normalisation weights (1-D parameters) get no decay: shrinking them does not regularise, it just
    fights the normalisation.

    Example:
        >>> opt = make_optimizer(nn.Linear(4, 2), TrainRecipe(weight_decay=5e-4))
        >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
        [(1, 0.0005), (1, 0.0)]
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
