"""The step schedule: torch's StepLR by epochs, checked by hand and against torch itself, after the linear warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from attnsearch.optim import learning_rate


def step_lr(step: int, **kwargs: float) -> float:
    return learning_rate(step, total_steps=100, peak=1.0, schedule="step", **kwargs)  # type: ignore[arg-type]


def test_step_by_hand() -> None:
    # 3 steps an epoch, decay by 0.5 every 2 epochs: epochs 0-1 at 1, 2-3 at 0.5, 4-5 at 0.25
    lrs = [step_lr(s, warmup_steps=0, steps_per_epoch=3, step_size=2, gamma=0.5) for s in range(18)]
    assert lrs == [1.0] * 6 + [0.5] * 6 + [0.25] * 6


def test_step_after_warm_up() -> None:
    # warm-up over 4 steps (2 epochs of 2 steps), then the decay that epoch has reached: epoch 2 -> gamma ** 2
    lrs = [step_lr(s, warmup_steps=4, steps_per_epoch=2, step_size=1, gamma=0.5) for s in range(8)]
    assert lrs == [0.25, 0.5, 0.75, 1.0, 0.25, 0.25, 0.125, 0.125]


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.1), (3, 0.5), (30, 0.1), (4, 1.0)])
def test_step_matches_torch_steplr(step_size: int, gamma: float) -> None:
    per_epoch, peak = 5, 0.05
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    for epoch in range(40):
        for s in range(per_epoch):
            ours = learning_rate(
                epoch * per_epoch + s,
                total_steps=40 * per_epoch,
                warmup_steps=0,
                peak=peak,
                schedule="step",
                steps_per_epoch=per_epoch,
                step_size=step_size,
                gamma=gamma,
            )
            assert math.isclose(ours, optimizer.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-15)
        optimizer.step()
        scheduler.step()


def test_step_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="gamma"):
        step_lr(0, warmup_steps=0, gamma=0.0)
    with pytest.raises(ValueError, match="step_size"):
        step_lr(0, warmup_steps=0, step_size=0)
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid: cosine, onecycle, step"):
        learning_rate(0, total_steps=1, warmup_steps=0, peak=1.0, schedule="linear")
