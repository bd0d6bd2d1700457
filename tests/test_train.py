"""train_model on a learnable toy problem: learning, pruning, stopping, divergence, OOM, determinism, schedule."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

import attnsearch.train as train_module
from attnsearch import build_model
from attnsearch.candidate import TrainRecipe
from attnsearch.data.dataset import Dataset
from attnsearch.train import TrainResult, evaluate, learning_rate, make_optimizer, train_model

FAST = TrainRecipe(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5)


def toy(n_train: int = 256, n_val: int = 128, classes: int = 4, size: int = 32, seed: int = 0) -> Dataset:
    """Class c brightens the top (c even) or bottom half of channel c // 2: survives flips and 4-pixel crops."""
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    y = torch.randint(0, classes, (n,), generator=gen)
    x = torch.randint(0, 100, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    half = size // 2
    for c in range(classes):
        rows = slice(0, half) if c % 2 == 0 else slice(half, size)
        x[y == c, (c // 2) % 3, rows] += 120
    names = tuple(f"c{c}" for c in range(classes))
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], names)


def fit(model: nn.Module, data: Dataset, recipe: TrainRecipe, **kwargs: object) -> TrainResult:
    """train_model on one thread: several threads only contend on a small shared CPU (and are no faster here)."""
    kwargs.setdefault("threads", 1)
    return train_model(model, data, recipe, **kwargs)  # type: ignore[arg-type]


def vgg(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return build_model("vgg11_bn", {"block3": "se"}, num_classes=classes, width=0.125, head="compact", image_size=32)


def test_learns_toy_problem_and_reports_every_epoch() -> None:
    calls: list[tuple[int, float]] = []

    def report(epoch: int, val_acc: float) -> bool:
        calls.append((epoch, val_acc))
        return False

    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.05)
    result = fit(vgg(), toy(), recipe, report=report, build_seconds=0.25)
    assert (result.state, result.reason, result.epochs_run) == ("complete", None, 3)
    assert [e for e, _ in calls] == [1, 2, 3]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert [a for _, a in calls] == [h["val_acc"] for h in result.history]
    assert result.val_acc == result.history[-1]["val_acc"] > 0.7  # chance is 0.25
    assert result.val_top5 is None  # 4 classes
    assert result.images_per_second > 0
    assert result.timings["build"] == 0.25 and result.timings["train"] > 0 and result.timings["eval"] > 0
    assert set(result.history[0]) == {
        "epoch",
        "train_loss",
        "val_acc",
        "val_top5",
        "val_loss",
        "val_images",
        "lr",
        "seconds",
        "val_seconds",
    }
    assert [h["val_images"] for h in result.history] == [128, 128, 128]
    assert sum(h["val_seconds"] for h in result.history) == pytest.approx(result.timings["eval"])
    assert all(0 < h["val_seconds"] < h["seconds"] for h in result.history)
    assert result.to_dict()["history"] == result.history


def test_epoch_val_size_scores_a_fixed_subset_before_the_last_epoch() -> None:
    data = toy(n_val=100)
    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.05, epoch_val_size=40)
    model = vgg()
    result = fit(model, data, recipe)
    assert [h["val_images"] for h in result.history] == [40, 40, 100]
    for h in result.history[:2]:
        assert abs(h["val_acc"] * 40 - round(h["val_acc"] * 40)) < 1e-9  # a count out of 40
    # the last epoch is the trial's score: the whole validation set, as a plain evaluation of the trained model
    whole = evaluate(model, data, channels_last=True)
    assert whole.count == 100 and result.val_acc == pytest.approx(whole.accuracy)
    # larger than the set: every epoch scores all of it
    capped = fit(vgg(), data, TrainRecipe(epochs=2, batch_size=32, lr=0.05, epoch_val_size=500))
    assert [h["val_images"] for h in capped.history] == [100, 100]


def test_epochs_before_first_val_epoch_skip_validation_and_change_nothing_else() -> None:
    data = toy(n_train=128, n_val=64)
    reported: list[tuple[int, float | None]] = []

    def report(epoch: int, val_acc: float | None) -> bool:
        reported.append((epoch, val_acc))
        return val_acc is None  # an answer to a progress-only report is ignored: no pruning without a score

    every = fit(vgg(), data, TrainRecipe(epochs=4, batch_size=32, lr=0.05))
    late = fit(vgg(), data, TrainRecipe(epochs=4, batch_size=32, lr=0.05), report=report, first_val_epoch=3)
    assert reported == [(h["epoch"], h["val_acc"]) for h in late.history]  # every epoch, for progress
    assert [h["epoch"] for h in late.history] == [1, 2, 3, 4] and late.epochs_run == 4 and late.state == "complete"
    for h in late.history[:2]:
        assert (h["val_acc"], h["val_top5"], h["val_loss"], h["val_images"], h["val_seconds"]) == (
            None,
            None,
            None,
            0,
            0.0,
        )
    assert [h["val_images"] for h in late.history[2:]] == [64, 64]
    # evaluation draws no random numbers and leaves the weights alone: the same training, bit for bit
    assert [h["train_loss"] for h in late.history] == [h["train_loss"] for h in every.history]
    assert [h["val_acc"] for h in late.history[2:]] == [h["val_acc"] for h in every.history[2:]]
    assert late.val_acc == every.val_acc and late.val_loss == every.val_loss
    assert late.timings["eval"] < every.timings["eval"]
    # past the last epoch: the last epoch is still the score
    last_only = fit(vgg(), data, TrainRecipe(epochs=2, batch_size=32, lr=0.05), first_val_epoch=9)
    assert [h["val_images"] for h in last_only.history] == [0, 64] and last_only.val_acc == last_only.history[-1][
        "val_acc"
    ]
    with pytest.raises(ValueError, match="first_val_epoch must be at least 1"):
        fit(vgg(), data, TrainRecipe(epochs=1), first_val_epoch=0)


def test_normalization_is_counted_once_per_unchanged_image_tensor(monkeypatch) -> None:
    counted: list[int] = []
    real = train_module.normalization
    monkeypatch.setattr(train_module, "normalization", lambda x: counted.append(id(x)) or real(x))
    data = toy(n_train=64, n_val=32)
    recipe = TrainRecipe(epochs=1, batch_size=32, augment=())
    first = fit(vgg(), data, recipe)
    again = fit(vgg(), data, recipe)
    assert len(counted) == 1 and first.val_acc == again.val_acc  # the same statistics, counted once
    data.train_x[0] = 255 - data.train_x[0]  # changed in place: counted again, with the change
    changed = fit(vgg(), data, recipe)
    assert len(counted) == 2
    mean, std = train_module._normalization(data.train_x)
    assert torch.equal(mean, real(data.train_x)[0]) and torch.equal(std, real(data.train_x)[1])
    other = toy(n_train=64, n_val=32, seed=1)  # another tensor: its own statistics
    fit(vgg(), other, recipe)
    assert len(counted) == 3 and changed.state == "complete"


def test_first_step_memory_grows_with_the_batch() -> None:
    data = toy(n_train=128, n_val=32)
    small = fit(vgg(), data, TrainRecipe(epochs=1, batch_size=16, augment=()))
    large = fit(vgg(), data, TrainRecipe(epochs=1, batch_size=64, augment=()))
    assert small.train_memory_bytes is not None and large.train_memory_bytes is not None
    # activations scale with the batch; the first conv's output alone (B x 8 x 32 x 32 floats) is a floor
    assert 3.0 < large.train_memory_bytes / small.train_memory_bytes < 4.5
    assert small.train_memory_bytes > 16 * 8 * 32 * 32 * 4


def test_top5_with_five_or_more_classes() -> None:
    result = fit(vgg(6), toy(128, 64, classes=6), TrainRecipe(epochs=1, batch_size=32))
    assert result.val_top5 is not None and result.val_acc is not None
    assert result.val_acc <= result.val_top5 <= 1.0


def test_report_true_prunes() -> None:
    epochs: list[int] = []
    result = fit(vgg(), toy(128, 64), FAST, report=lambda e, _: epochs.append(e) or True)
    assert (result.state, result.reason, result.epochs_run) == ("pruned", "pruned", 1)
    assert epochs == [1]


def test_should_stop_interrupts() -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    result = fit(vgg(), toy(128, 64), FAST, should_stop=should_stop)
    assert (result.state, result.reason, result.epochs_run) == ("failed", "interrupted", 0)
    assert result.val_acc is None


class NaNAfter(nn.Module):
    """Passes its input through for ``calls`` training forwards, then multiplies it by NaN."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls -= 1
        return x * float("nan") if self.calls < 0 else x


def test_nan_loss_fails_as_diverged() -> None:
    model = nn.Sequential(vgg(), NaNAfter(10))  # 4 steps per epoch: NaN during epoch 3
    result = fit(model, toy(128, 64), TrainRecipe(epochs=4, batch_size=32))
    assert (result.state, result.reason, result.epochs_run) == ("failed", "diverged", 2)
    assert result.val_acc == result.history[-1]["val_acc"]
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_huge_learning_rate_fails_as_diverged() -> None:
    result = fit(vgg(), toy(128, 64), TrainRecipe(epochs=2, batch_size=32, lr=1e12, warmup_epochs=0))
    assert (result.state, result.reason) == ("failed", "diverged")


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), RuntimeError("out of memory")]
)
def test_out_of_memory_fails_as_oom(error: Exception) -> None:
    model = vgg()

    def explode(x: torch.Tensor) -> torch.Tensor:
        raise error

    model.classifier.forward = explode  # type: ignore[method-assign]
    result = fit(model, toy(128, 64), FAST)
    assert (result.state, result.reason, result.epochs_run) == ("failed", "oom", 0)
    assert all(p.grad is None for p in model.parameters())


def test_other_errors_propagate() -> None:
    model = vgg()

    def explode(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    model.classifier.forward = explode  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fit(model, toy(128, 64), FAST)


def test_same_seed_same_run_different_seed_different_run() -> None:
    base, data = vgg(), toy(128, 64)

    def run(seed: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        model = copy.deepcopy(base)
        result = fit(model, data, FAST, seed=seed)
        history = [{k: v for k, v in h.items() if k not in ("seconds", "val_seconds")} for h in result.history]
        return history, model.state_dict()

    (h1, w1), (h2, w2), (h3, w3) = run(0), run(0), run(1)
    assert h1 == h2
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert [h["train_loss"] for h in h1] != [h["train_loss"] for h in h3]
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_threads_set_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    original = train_module._train

    def spy(*args: object) -> None:
        seen.append(torch.get_num_threads())
        original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "_train", spy)
    fit(vgg(), toy(64, 32), TrainRecipe(epochs=1, batch_size=32), threads=1)
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_warmup_cosine_schedule_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[float] = []
    step = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.1, warmup_epochs=0.5, schedule="cosine")
    result = fit(vgg(), toy(128, 64), recipe)  # 4 steps per epoch: 12 steps, 2 of warm-up
    peak, total, warmup = 0.1, 12, 2
    expected = [peak * (s + 1) / warmup for s in range(warmup)]
    expected += [peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in range(warmup, total)]
    assert used == pytest.approx(expected)
    assert used[1] == pytest.approx(peak) and used[-1] < 0.03 * peak
    assert [h["lr"] for h in result.history] == pytest.approx([expected[3], expected[7], expected[11]])


def test_step_budget_replaces_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[int] = []
    recipe = TrainRecipe(epochs=99, steps=6, batch_size=32, warmup_epochs=0)  # 4 steps per pass
    result = fit(vgg(), toy(128, 64), recipe, report=lambda e, _: reported.append(e) or False)
    assert result.state == "complete" and reported == [1, 2] and result.epochs_run == 2


def test_onecycle_shape() -> None:
    lrs = [learning_rate(s, total_steps=100, warmup_steps=30, peak=1.0, schedule="onecycle") for s in range(100)]
    assert lrs[0] == pytest.approx(1 / 25) and lrs[30] == pytest.approx(1.0) and lrs[99] == pytest.approx(1 / 25e4)
    assert max(lrs) == lrs[30]
    assert all(a < b for a, b in itertools.pairwise(lrs[:31])) and all(a > b for a, b in itertools.pairwise(lrs[30:]))


def test_weight_decay_spares_one_dimensional_parameters() -> None:
    model = vgg()
    for name in ("sgd", "adamw"):
        optimizer = make_optimizer(model, TrainRecipe(optimizer=name, weight_decay=1e-3))
        decay, no_decay = optimizer.param_groups
        assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    sgd = make_optimizer(model, TrainRecipe(optimizer="sgd"))
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(make_optimizer(model, TrainRecipe(optimizer="adamw")), torch.optim.AdamW)


def test_bf16_on_cpu_and_unknown_settings() -> None:
    recipe = TrainRecipe(epochs=1, batch_size=32, precision="bf16", optimizer="adamw", lr=1e-3, schedule="onecycle")
    assert fit(vgg(), toy(64, 32), recipe).state == "complete"
    with pytest.raises(ValueError, match="unknown precision"):
        fit(vgg(), toy(64, 32), TrainRecipe(precision="fp16"))
