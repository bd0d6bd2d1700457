"""What a model costs: parameters, FLOPs, and on request latency and training memory.

FLOPs come from ``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs), so attention matmuls are counted
like convolutions, with no per-layer formula table of our own.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["StepMemory", "count_flops", "count_params", "measure_costs", "measure_latency"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` (eval mode) for one input of ``input_shape``, counted on the meta device.

    The meta device computes shapes only: no memory for activations (an N x N attention matrix of a large map
    costs nothing to count) and the plain matmul path of every attention op, which the counter knows.
    """
    meta = {name: torch.empty_like(t, device="meta") for name, t in (*model.named_parameters(), *model.named_buffers())}
    x = torch.zeros(input_shape, device="meta")
    with _eval(model), _norms_skipped(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        functional_call(model, meta, (x,))
    return int(counter.get_total_flops())


class _norms_skipped:
    """Batch norm layers pass their input through for a block.

    The counter gives batch norm no FLOPs (it counts matrix products and convolutions), and on the meta device it
    is the slowest op: a VGG16-BN is counted in about 30 ms instead of 70 without it. Shapes are unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        for norm in self.norms:
            norm.forward = _passthrough  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        for norm in self.norms:
            del norm.forward


def _passthrough(x: torch.Tensor) -> torch.Tensor:
    return x


def measure_costs(
    model: nn.Module,
    *,
    image_size: int,
    latency: bool = False,
    memory: bool = False,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    repeats: int = 10,
) -> dict[str, Any]:
    """Parameters and per-image forward FLOPs; with ``latency`` or ``memory`` also timings and training memory.

    The default call runs one forward pass on the meta device and nothing else, so it is cheap enough to run
    before every trial, whatever the size of the model. ``latency=True`` adds ``latency_ms`` (median over
    ``repeats`` forward passes at batch 1) and ``latency_ms_batch`` (the same at ``batch_size``).
    ``memory=True`` adds ``train_memory_bytes``, the peak activation memory of one training step at
    ``batch_size`` (tensors saved for backward on any device, and the allocator's peak on CUDA).

    Example:
        >>> from attnsearch import build_model
        >>> with torch.device("meta"):  # counting runs nothing: no need to allocate VGG16's 138M weights
        ...     model = build_model("vgg16", num_classes=1000)
        >>> measure_costs(model, image_size=224)["flops"] / 1e9
        30.9...
    """
    if device is not None:
        model = model.to(device)
    costs: dict[str, Any] = {"params": count_params(model), "flops": count_flops(model, (1, 3, image_size, image_size))}
    if latency:
        costs["latency_ms"] = _latency_ms(model, image_size, 1, repeats)
        costs["latency_ms_batch"] = _latency_ms(model, image_size, batch_size, repeats)
        costs["latency_batch_size"] = batch_size
    if memory:
        costs["train_memory_bytes"] = _train_memory_bytes(model, image_size, batch_size)
    return costs


def measure_latency(model: nn.Module, *, image_size: int, batch_size: int = 1, repeats: int = 10) -> float:
    """Median milliseconds of one eval-mode forward pass at ``batch_size``, on the model's own device.

    Two passes before the ``repeats`` timed ones warm caches and kernels; the device is synchronized around each.
    """
    return _latency_ms(model, image_size, batch_size, repeats)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class _eval:
    """Put a model in eval mode for a block and restore its previous mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> nn.Module:
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _latency_ms(model: nn.Module, image_size: int, batch_size: int, repeats: int) -> float:
    device = _device_of(model)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    times = []
    with _eval(model), torch.inference_mode():
        for i in range(repeats + 2):  # the first two passes warm caches and kernels
            _synchronize(device)
            start = time.perf_counter()
            model(x)
            _synchronize(device)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _train_memory_bytes(model: nn.Module, image_size: int, batch_size: int) -> int:
    device = _device_of(model)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    # a training step updates BatchNorm statistics: measuring must leave the model as it was
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with StepMemory(model) as memory:
            model(x).float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return memory.bytes


class StepMemory:
    """Around one training step (forward and backward): its activation memory in ``bytes`` afterwards.

    Counts each storage autograd saves for backward once (views share memory), weights excepted. On CUDA the
    allocator's peak over the step, less what was allocated before, is taken when larger: it also sees temporaries
    freed before backward.
    """

    def __init__(self, model: nn.Module) -> None:
        self.device = _device_of(model)
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.saved: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self.baseline = 0
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self.saved[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> StepMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)
        self.bytes = sum(self.saved.values())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = max(self.bytes, torch.cuda.max_memory_allocated(self.device) - self.baseline)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t
