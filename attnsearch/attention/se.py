"""Squeeze-and-Excitation (SE) channel attention.

Paper: Jie Hu, Li Shen, Gang Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507.

Mechanism: global average pooling squeezes each channel to one number, a two-layer bottleneck MLP
(C -> C/r -> C, ReLU between, sigmoid after) turns those numbers into one gate per channel, and the
input is rescaled channel by channel: ``out = x * gate``.

Blog-post versions vs the paper: many tutorials compute the hidden width as ``C // r`` with no floor,
which is 0 (and crashes, or silently builds an empty layer) whenever ``C < r``; we use
``max(1, C // r)``. Some drop the FC biases or put a ReLU/softmax where the paper has a sigmoid; we keep
both fully connected layers with bias (as in the paper's FC layers) and a sigmoid gate. Others reshape
with ``.squeeze()`` without a dim, which breaks for a batch of one; we reshape with explicit sizes.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from .registry import at_least, reduction_rule, register_module

__all__ = ["SqueezeExcite"]


@register_module("se", paper="Hu, Shen, Sun: Squeeze-and-Excitation Networks, CVPR 2018", arxiv="1709.01507")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation block: a per-channel sigmoid gate computed from the global average.

    Args:
        channels: number of input channels C.
        reduction: bottleneck ratio r; the hidden width is ``max(1, C // r)``. Must be >= 1.

    Example:
        >>> se = SqueezeExcite(64, reduction=16)
        >>> se(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        at_least(1, channels=channels, reduction=reduction)
        self.channels = channels
        self.reduction = reduction
        hidden = max(1, channels // reduction)  # floor of 1 so that C < r still gives a working bottleneck
        self.fc1 = nn.Linear(channels, hidden, bias=True)
        self.relu = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(hidden, channels, bias=True)

    # the hidden width max(1, C // reduction) decides: reductions giving one width are one module
    effective_params = reduction_rule()

    def gate(self, x: Tensor) -> Tensor:
        """The excitation ``sigmoid(W2 relu(W1 z + b1) + b2)`` of ``x``, shaped (B, C, 1, 1)."""
        b, c = x.shape[0], x.shape[1]
        z = x.mean(dim=(2, 3))  # (B, C): the squeeze
        s = torch.sigmoid(self.fc2(self.relu(self.fc1(z))))  # (B, C)
        return s.reshape(b, c, 1, 1)  # (B, C, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
