"""The brief trainer: train one candidate model for a few epochs and report validation accuracy after each.

``train_model`` never raises for the ways a trial is expected to end early: a pruner's verdict (state
``"pruned"``), a stop request (``"failed"``/``"interrupted"``), divergence (``"failed"``/``"diverged"``, see
:func:`exploded`: a training loss that is not finite or has exploded, or a validation loss that is not finite) or
running out of memory (``"failed"``/``"oom"``). Any other exception propagates for the caller to record.

Determinism: on the CPU, the same model weights, data, recipe and ``seed`` give bit-identical history and final
weights (the CPU kernels these models use are deterministic; ``torch.use_deterministic_algorithms`` is not
switched on, as it is process-wide and makes CUDA raise for ops without a deterministic kernel, e.g. the adaptive
average pool's backward). On CUDA, batch order and augmentation are still identical for a seed, but the weights
may differ in the last bits from run to run (atomic adds in cuDNN's backward passes).

Scoring a model on validation images, after an epoch or on its own (:func:`evaluate`), is
:mod:`attnsearch.evaluation`'s part.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .candidate import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainRecipe
from .costs import StepMemory
from .data.dataset import Dataset
from .data.augment import mixed_cross_entropy
from .data.loader import Batches, normalization
from .evaluation import Evaluation, _epoch_subset, _eval_batch, _evaluate, _use_bf16, evaluate
from .optim import learning_rate, make_optimizer

__all__ = [
    "DIVERGENCE_FACTOR",
    "Evaluation",
    "TrainResult",
    "evaluate",
    "exploded",
    "learning_rate",
    "make_optimizer",
    "train_model",
    "validates",
]

CUDA_CHECK_EVERY = 32  # steps between divergence checks off the CPU (each check waits for the device)
DIVERGENCE_FACTOR = 100.0  # a mean training loss above this many times its reference has exploded (see exploded)


def exploded(mean_loss: float, reference: float) -> bool:
    """Whether a mean training loss says the run has diverged: it is not finite, or it exceeds
    :data:`DIVERGENCE_FACTOR` times ``reference``.

    The reference is the larger of the run's first step's loss and ``ln(classes)``: the cross-entropy of a model
    that guesses uniformly, where an untrained classifier starts (``ln 10`` = 2.3 for 10 classes, so a mean above
    230 has exploded). A learning run's loss falls from there, and even a bad spike stays within a few times it; a
    run whose learning rate is far too high reaches 1e10 and beyond within steps, while still finite.

    Example:
        >>> exploded(2.1, 2.3), exploded(1e17, 2.3), exploded(float("nan"), 2.3), exploded(float("inf"), 2.3)
        (False, True, True, True)
    """
    return not math.isfinite(mean_loss) or mean_loss > DIVERGENCE_FACTOR * reference


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended, with per-epoch history; ``val_*`` and ``train_loss`` are the last epoch's.

    Example:
        >>> TrainResult("pruned", "pruned", val_acc=0.31, epochs_run=1).to_dict()["state"]
        'pruned'
    """

    state: str  # complete | pruned | failed
    reason: str | None = None  # None, or diverged | oom | pruned | interrupted | an exception's one-line text
    val_acc: float | None = None  # top-1 of the last evaluated epoch, 0..1; None when no epoch finished
    val_top5: float | None = None  # None also when the model has fewer than 5 classes
    val_loss: float | None = None  # mean cross-entropy on validation (no label smoothing)
    train_loss: float | None = None  # mean training loss (with label smoothing) of the last evaluated epoch
    # per epoch: epoch, train_loss, val_acc, val_top5, val_loss, val_images (how many were scored), lr (of its
    # last step), seconds (train + val), val_seconds
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0  # epochs trained and evaluated
    timings: dict[str, float] = field(default_factory=dict)  # build, train, eval seconds
    images_per_second: float = 0.0  # training images per second of the train phase
    # peak activation memory of the first training step: tensors saved for backward (and the allocator's peak
    # on CUDA); None when no step ran
    train_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (a deep copy), ready for JSON."""
        return asdict(self)


def validates(epoch: int, epochs: int, first_val_epoch: int) -> bool:
    """Whether epoch ``epoch`` (from 1) of ``epochs`` ends with a validation pass: every epoch from
    ``first_val_epoch`` on (the first one a pruner may judge), and the last always.

    Example:
        >>> [validates(e, 4, first_val_epoch=3) for e in (1, 2, 3, 4)]
        [False, False, True, True]
    """
    return epoch == epochs or epoch >= first_val_epoch


def train_model(
    model: nn.Module,
    dataset: Dataset,
    recipe: TrainRecipe,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    threads: int | None = None,
    report: Callable[[int, float | None], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    build_seconds: float = 0.0,
    first_val_epoch: int = 1,
) -> TrainResult:
    """Train ``model`` on ``dataset`` following ``recipe``, validating after every epoch from ``first_val_epoch``
    on, and always after the last (see :func:`validates`).

    The dataset is moved to ``device`` once (as uint8) and the model is moved there and trained in place.
    ``seed`` fixes batch order, augmentation and dropout (``torch.manual_seed``), not the initial weights: the
    caller built the model. ``report(epoch, val_acc)`` is called after each epoch's validation (epochs count
    from 1; epochs before the last score a fixed subset of ``recipe.epoch_val_size`` validation images when that
    is set, the last epoch always the whole set); returning True stops the run as ``"pruned"``. An epoch before
    ``first_val_epoch`` has no validation pass: it is reported as ``report(epoch, None)`` (progress only;
    its answer is ignored) and its history entry holds None for the validation figures. Skipping a pass changes
    nothing else (evaluation draws no random numbers).
    ``should_stop()`` is polled after every step; True stops the run as ``"failed"``/``"interrupted"``.
    ``threads`` sets torch's CPU threads for the run (restored afterwards). ``build_seconds`` is the caller's
    model-building time, passed through to ``timings``.

    An epoch is one pass over the training images, in batches of ``recipe.batch_size`` (the last partial batch
    is dropped, unless there are fewer images than one batch). When ``recipe.steps`` is set, it replaces
    ``recipe.epochs``: training stops after that many optimizer steps, validating at the end of each pass and
    after the last step (so the last reported epoch may be a partial pass). Warm-up lasts
    ``recipe.warmup_epochs`` passes either way. The learning rate is set before every step (see
    :func:`learning_rate`).

    Divergence ends the run as ``"failed"``/``"diverged"``: the epoch's mean training loss so far is checked with
    :func:`exploded` (not finite, or above :data:`DIVERGENCE_FACTOR` times the larger of the first step's loss and
    ln(classes)) after every step on the CPU (free: the CPU is synchronous anyway) and every ``CUDA_CHECK_EVERY``
    steps and at the end of each epoch on other devices (a check waits for the device); a validation pass whose loss
    is not finite ends it too, its epoch kept in the history and not reported.

    Example:
        >>> from attnsearch import build_model
        >>> x, y = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (96,))
        >>> dataset = Dataset("noise", x[:64], y[:64], x[64:], y[64:], tuple("abcdefghij"))
        >>> model = build_model("vgg11_bn", {"block3": "se"}, num_classes=10, width=0.125, head="compact",
        ...                     image_size=32)
        >>> result = train_model(model, dataset, TrainRecipe(epochs=2, batch_size=32), seed=0)
        >>> result.state, result.epochs_run, len(result.history)
        ('complete', 2, 2)
    """
    _check_recipe(recipe)
    if first_val_epoch < 1:
        raise ValueError(f"first_val_epoch must be at least 1, got {first_val_epoch}")
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    run = _Run()
    out_of_memory = False
    try:
        try:
            _train(model, dataset, recipe, device, seed, report, should_stop, run, first_val_epoch)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            out_of_memory = True
        # Outside the except block: the traceback (and the frames holding the activations) is gone by now.
        if out_of_memory:
            run.state, run.reason = "failed", "oom"
            model.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(previous_threads)
    return run.result(build_seconds)


@dataclass
class _Run:
    state: str = "failed"
    reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images: int = 0
    memory_bytes: int | None = None

    def result(self, build_seconds: float) -> TrainResult:
        last = self.history[-1] if self.history else {}
        return TrainResult(
            state=self.state,
            reason=self.reason,
            val_acc=last.get("val_acc"),
            val_top5=last.get("val_top5"),
            val_loss=last.get("val_loss"),
            train_loss=last.get("train_loss"),
            history=self.history,
            epochs_run=len(self.history),
            timings={"build": build_seconds, "train": self.train_seconds, "eval": self.eval_seconds},
            images_per_second=self.images / self.train_seconds if self.train_seconds > 0 else 0.0,
            train_memory_bytes=self.memory_bytes,
        )


def _train(
    model: nn.Module,
    dataset: Dataset,
    recipe: TrainRecipe,
    device: torch.device,
    seed: int,
    report: Callable[[int, float | None], bool] | None,
    should_stop: Callable[[], bool] | None,
    run: _Run,
    first_val_epoch: int,
) -> None:
    torch.manual_seed(seed)  # dropout and any other randomness inside the model
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation, drawn on the CPU
    data = dataset.to(device)
    if data.train_x.shape[0] == 0 or data.val_x.shape[0] == 0:
        raise ValueError(f"dataset {data.name!r} needs training and validation images")
    mean, std = _normalization(data.train_x)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    n = data.train_x.shape[0]
    train = Batches(
        data.train_x,
        data.train_y,
        recipe.batch_size,
        mean=mean,
        std=std,
        augment=recipe.augment,
        augment_params=recipe.augment_params,
        shuffle=True,
        drop_last=n >= recipe.batch_size,  # equal batches (batch norm dislikes a runt), but never zero batches
        generator=generator,
        channels_last=recipe.channels_last,
    )
    val = Batches(data.val_x, data.val_y, _eval_batch(recipe), mean=mean, std=std, channels_last=recipe.channels_last)
    epoch_val = _epoch_subset(data, recipe, mean, std) or val
    per_epoch = len(train)
    total = recipe.steps if recipe.steps is not None else recipe.epochs * per_epoch
    epochs = -(-total // per_epoch)
    warmup = min(total, round(recipe.warmup_epochs * per_epoch))
    optimizer = make_optimizer(model, recipe)
    bf16 = _use_bf16(recipe.precision, device)
    check_every = 1 if device.type == "cpu" else CUDA_CHECK_EVERY
    reference = math.inf  # the loss the run starts from (see exploded); set by the first step
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        steps = 0
        lr = recipe.lr
        stopped: str | None = None
        for x, y in itertools.islice(train, total - step):  # the step budget may end mid-pass
            lr = learning_rate(
                step,
                total_steps=total,
                warmup_steps=warmup,
                peak=recipe.lr,
                schedule=recipe.schedule,
                steps_per_epoch=per_epoch,
                step_size=recipe.step_size,
                gamma=recipe.gamma,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            memory = StepMemory(model) if step == 0 else contextlib.nullcontext()
            with memory:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)  # (B, classes)
                # y: labels (B,), or mixed targets (B, 3) under mixup / cutmix
                loss = mixed_cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            if isinstance(memory, StepMemory):
                run.memory_bytes = memory.bytes
            optimizer.step()
            loss_sum += loss.detach()
            if step == 0:
                first = loss.item()
                reference = max(first, math.log(logits.shape[1])) if math.isfinite(first) else 1.0
            step += 1
            steps += 1
            run.images += y.shape[0]
            if steps % check_every == 0 and exploded(loss_sum.item() / steps, reference):
                stopped = "diverged"
                break
            if should_stop is not None and should_stop():
                stopped = "interrupted"
                break
        train_loss = loss_sum.item() / max(1, steps)  # waits for the device: the epoch's time is complete
        run.train_seconds += time.perf_counter() - started
        if stopped is None and exploded(train_loss, reference):
            stopped = "diverged"
        if stopped is not None:
            run.state, run.reason = "failed", stopped
            return
        scored = validates(epoch, epochs, first_val_epoch)
        eval_started = time.perf_counter()
        evaluation = _evaluate(model, val if epoch == epochs else epoch_val, bf16) if scored else None
        val_seconds = time.perf_counter() - eval_started if scored else 0.0
        run.eval_seconds += val_seconds
        run.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_acc": evaluation.accuracy if evaluation else None,
                "val_top5": evaluation.top5 if evaluation else None,
                "val_loss": evaluation.loss if evaluation else None,
                "val_images": evaluation.count if evaluation else 0,
                "lr": lr,  # of the epoch's last step
                "seconds": time.perf_counter() - started,
                "val_seconds": val_seconds,
            }
        )
        if evaluation is not None and not math.isfinite(evaluation.loss):  # a model that predicts nothing usable
            run.state, run.reason = "failed", "diverged"
            return
        if report is not None:
            prune = report(epoch, evaluation.accuracy if evaluation else None)
            if prune and evaluation is not None:
                run.state, run.reason = "pruned", "pruned"
                return
    run.state, run.reason = "complete", None


_NORMALIZATIONS: list[tuple[weakref.ref[torch.Tensor], int, torch.Tensor, torch.Tensor]] = []
_NORMALIZATIONS_LOCK = threading.Lock()


def _normalization(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalization` of ``images``, kept while that very tensor lives unchanged (its version counter).

    The trials of a run train on one dataset: its statistics are counted once, not once a trial.
    """
    with _NORMALIZATIONS_LOCK:
        for ref, version, mean, std in _NORMALIZATIONS:
            if ref() is images and version == images._version:
                return mean, std
    mean, std = normalization(images)
    with _NORMALIZATIONS_LOCK:
        alive = [entry for entry in _NORMALIZATIONS if entry[0]() is not None][-3:]
        _NORMALIZATIONS[:] = [*alive, (weakref.ref(images), images._version, mean, std)]
    return mean, std


def _check_recipe(recipe: TrainRecipe) -> None:
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if recipe.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {recipe.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if recipe.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {recipe.precision!r}; valid: {', '.join(PRECISIONS)}")
    if recipe.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {recipe.batch_size}")
    if recipe.steps is None and recipe.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {recipe.epochs}")
    if recipe.steps is not None and recipe.steps < 1:
        raise ValueError(f"steps must be at least 1, got {recipe.steps}")
    if recipe.step_size < 1 or not 0 < recipe.gamma <= 1:
        raise ValueError(f"step_size must be at least 1 and gamma in (0, 1], got {recipe.step_size}, {recipe.gamma}")
    if recipe.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must not be negative, got {recipe.warmup_epochs}")


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err))
