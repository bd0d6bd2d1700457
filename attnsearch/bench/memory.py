"""``attnsearch bench memory``: the memory and time of a training step of self-attention as feature maps grow.

Three modules on the same input, at growing H x W: our ``self_attention`` (``scaled_dot_product_attention``,
which on the CPU runs the fused kernel and never stores the N x N attention matrix), the same weights through a
naive ``bmm -> softmax -> bmm`` (the textbook SAGAN code, which stores it for backward), and
``linear_attention``. Memory is what a training step keeps for backward: the bytes of every distinct tensor
saved by autograd (``torch.autograd.graph.saved_tensors_hooks``), parameters excluded; on CUDA also the
allocator's peak above what was allocated before the step. Time is the median forward + backward of a step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..attention.linear_attention import LinearAttention
from ..attention.self_attention import SelfAttention
from ..device import resolve_device
from .output import load_average

__all__ = ["MEMORY_MODULES", "MemoryBench", "MemoryRow", "NaiveSelfAttention", "bench_memory", "saved_bytes"]

SIZES = (16, 32, 48, 64, 96, 128)  # H = W of the feature maps tried
MEMORY_MODULES = ("self_attention", "naive bmm-softmax", "linear_attention")


class NaiveSelfAttention(nn.Module):
    """SAGAN self-attention written out with ``bmm`` and ``softmax``, on the weights of a :class:`SelfAttention`.

    The same function as ``attention`` (``downsample=False``), computed the textbook way: the (B, N, N) attention
    matrix is formed, and kept for backward.

    Example:
        >>> ours = SelfAttention(16)
        >>> _ = nn.init.constant_(ours.gamma, 0.5)
        >>> x = torch.randn(2, 16, 5, 6)
        >>> torch.allclose(NaiveSelfAttention(ours)(x), ours(x), atol=1e-5)
        True
    """

    def __init__(self, attention: SelfAttention) -> None:
        super().__init__()
        if attention.downsample:
            raise ValueError("the naive version has no downsample")
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        m = self.attention
        b, c, h, w = x.shape
        q = m.query(x).flatten(2)  # (B, d, N)
        k = m.key(x).flatten(2)  # (B, d, N)
        v = m.value(x).flatten(2)  # (B, C, N)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N, N): row i attends over every j
        out = torch.bmm(v, attn.transpose(1, 2))  # (B, C, N)
        return x + m.gamma * out.view(b, c, h, w)


@dataclass
class MemoryRow:
    module: str
    size: int  # H = W
    positions: int  # N = H * W
    saved_bytes: int | None  # tensors saved for backward by one training step; None when skipped
    peak_bytes: int | None  # CUDA: the allocator's peak over the step; None on the CPU
    step_ms: float | None  # forward + backward, median
    skipped: str | None = None  # why this size was not run


@dataclass
class MemoryBench:
    """One row per module and feature-map size.

    Example:
        >>> bench = bench_memory(sizes=(8, 16), batch_size=2, channels=16, repeats=1)
        >>> [(r.module, r.size) for r in bench.rows][:2]
        [('self_attention', 8), ('self_attention', 16)]
    """

    config: dict[str, Any]
    rows: list[MemoryRow]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows: one row per map size, MiB and ms per module, as ``attnsearch bench memory``."""
        by_key = {(r.module, r.size): r for r in self.rows}
        modules = list(dict.fromkeys(r.module for r in self.rows))
        rows = []
        for size in self.config["sizes"]:
            row = [f"{size}x{size}", f"{size * size:,}"]
            for module in modules:
                r = by_key[(module, size)]
                measured = r.saved_bytes is not None
                row += [f"{r.saved_bytes / 2**20:,.1f}" if measured else "-", f"{r.step_ms:,.1f}" if measured else "-"]
            rows.append(row)
        c = self.config
        title = (
            f"Attention memory: batch {c['batch_size']}, C={c['channels']}, {c['device']} {c['dtype']}; MiB saved "
            "for backward, ms per forward + backward"
        )
        return title, ["map", "positions", *(f"{m} {unit}" for m in modules for unit in ("MiB", "ms"))], rows

    def notes(self) -> list[str]:
        """The lines printed after the table: each size a module skipped, and why."""
        return [f"{r.module} at {r.size}x{r.size} skipped: {r.skipped}" for r in self.rows if r.skipped]


def saved_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes of the distinct tensors a forward pass of ``module`` on ``x`` saves for backward, parameters excluded.

    Example:
        >>> saved_bytes(nn.Linear(4, 4), torch.randn(8, 4))  # the input, kept for the weight's gradient
        128
    """
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()  # views share a storage: each counted once
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.float().square().mean().backward()
    module.zero_grad(set_to_none=True)
    return sum(saved.values())


def bench_memory(
    *,
    sizes: tuple[int, ...] = SIZES,
    batch_size: int = 4,
    channels: int = 64,
    repeats: int = 3,
    max_attention_bytes: float = 2 * 2**30,
    max_step_seconds: float = 20.0,
    device: str = "cpu",
    threads: int | None = None,
) -> MemoryBench:
    """Measure every module of :data:`MEMORY_MODULES` at each ``size`` (H = W) on a (batch, channels, H, W) input.

    A size is skipped for a module when its attention matrices (B x N x N float32) would pass
    ``max_attention_bytes`` (the naive version stores them) or when its step would take longer than
    ``max_step_seconds`` by the quadratic growth of the last size measured.
    """
    load = load_average()  # before this process adds its own
    torch_device = resolve_device(device)  # an AttnsearchError for CUDA on a machine without it
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        ours = SelfAttention(channels).to(torch_device)
        nn.init.constant_(ours.gamma, 0.5)  # a trained gamma: the attention branch contributes
        linear = LinearAttention(channels).to(torch_device)
        nn.init.constant_(linear.gamma, 0.5)
        modules: dict[str, nn.Module] = {
            "self_attention": ours,
            "naive bmm-softmax": NaiveSelfAttention(ours),
            "linear_attention": linear,
        }
        rows = []
        for name, module in modules.items():
            last: tuple[int, float] | None = None  # positions and seconds of the last size measured
            for size in sizes:
                n = size * size
                skipped = None
                if name == "naive bmm-softmax" and batch_size * n * n * 4 > max_attention_bytes:
                    skipped = f"its attention matrices would take {batch_size * n * n * 4 / 2**30:.1f} GiB"
                elif last is not None and last[1] * (n / last[0]) ** 2 > max_step_seconds:
                    skipped = f"a step would take about {last[1] * (n / last[0]) ** 2:.0f} s"
                if skipped is not None:
                    rows.append(MemoryRow(name, size, n, None, None, None, skipped))
                    continue
                row = _measure(module, name, size, batch_size, channels, repeats, torch_device)
                rows.append(row)
                last = (n, (row.step_ms or 0.0) / 1000)
    finally:
        torch.set_num_threads(previous)
    config = {
        "batch_size": batch_size,
        "channels": channels,
        "load_average_before": load,
        "sizes": list(sizes),
        "repeats": repeats,
        "device": str(torch_device),
        "threads": threads or torch.get_num_threads(),
        "dtype": "float32",
        "memory": "bytes of tensors saved for backward" + (", and CUDA allocator peak" if device != "cpu" else ""),
    }
    return MemoryBench(config, rows)


def _measure(
    module: nn.Module, name: str, size: int, batch: int, channels: int, repeats: int, device: torch.device
) -> MemoryRow:
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    saved = saved_bytes(module, x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
    times = []
    for _ in range(repeats):
        x.grad = None
        started = time.perf_counter()
        module(x).float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        module.zero_grad(set_to_none=True)
    return MemoryRow(name, size, size * size, saved, peak, statistics.median(times) * 1000)
