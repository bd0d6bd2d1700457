"""Efficient Channel Attention (ECA).

Paper: Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu, "ECA-Net: Efficient
Channel Attention for Deep Convolutional Neural Networks", CVPR 2020, arXiv 1910.03151.

Mechanism: global average pooling gives one number per channel, a 1D convolution (no bias) of width k
slides over the channel axis so each channel's gate sees its k neighbours, and a sigmoid turns the result
into a per-channel gate: ``out = x * gate``. The width k adapts to C:
``t = int(|log2(C) / gamma + b / gamma|)``, ``k = t if t is odd else t + 1`` (gamma=2, b=1 give
C=64 -> 3, C=256 -> 5).

Blog-post versions vs the paper: most tutorials hard-code ``k = 3`` for every layer, dropping the adaptive
rule that is the paper's point; we compute k from C unless ``kernel_size`` is given. Some give the conv a
bias (the paper's has none) or pad with ``(k - 1) // 2`` on an even k, which shifts the output by one
channel; we reject even kernels. Many reshape with ``y.squeeze(-1).transpose(-1, -2)`` or a bare
``.squeeze()``, which silently drops the batch axis for a batch of one; we reshape with explicit sizes.

Small C: the rule gives k = 1 at C = 1 with the default gamma and b, which is a plain per-channel scale.
For other gamma/b the adaptive k is clamped to at most ``2 * C - 1``: a wider kernel has taps that only
ever see the zero padding, so they would be dead parameters. An explicit ``kernel_size`` is used as given.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .registry import at_least, register_module

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """The paper's adaptive kernel width for ``channels`` channels, clamped to ``[1, 2 * channels - 1]``.

    Example:
        >>> eca_kernel_size(64), eca_kernel_size(256)
        (3, 5)
    """
    t = int(abs(math.log2(channels) / gamma + beta / gamma))
    k = t if t % 2 == 1 else t + 1
    return min(k, 2 * channels - 1)  # taps further than C - 1 channels away only see padding


@register_module(
    "eca",
    paper=(
        "Wang, Wu, Zhu, Li, Zuo, Hu: ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks,"
        " CVPR 2020"
    ),
    arxiv="1910.03151",
)
class EfficientChannelAttention(nn.Module):
    """ECA block: a per-channel sigmoid gate from a 1D conv across the pooled channel descriptor.

    Args:
        channels: number of input channels C.
        kernel_size: width of the 1D conv; ``None`` uses the paper's adaptive rule. Must be odd and >= 1.
        gamma: the paper's gamma in the adaptive rule. Must be >= 1.
        beta: the paper's b in the adaptive rule. Must be >= 0.

    Example:
        >>> eca = EfficientChannelAttention(256)
        >>> eca.kernel_size
        5
        >>> eca(torch.randn(2, 256, 7, 7)).shape
        torch.Size([2, 256, 7, 7])
    """

    def __init__(self, channels: int, *, kernel_size: int | None = None, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        at_least(1, channels=channels, gamma=gamma)
        at_least(0, beta=beta)
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be an odd integer >= 1 or null (adaptive), got {kernel_size}")
        self.channels = channels
        self.gamma = gamma
        self.beta = beta
        self.kernel_size = kernel_size if kernel_size is not None else eca_kernel_size(channels, gamma, beta)
        # odd k with padding k // 2 keeps the channel count and centres each channel's window on itself
        self.conv = nn.Conv1d(1, 1, kernel_size=self.kernel_size, padding=self.kernel_size // 2, bias=False)

    @classmethod
    def effective_params(cls, channels: int, **params: Any) -> dict[str, Any]:
        """The parameters as used at ``channels``: the kernel width, explicit (``kernel_size: null`` becomes the
        adaptive k at C); ``gamma`` and ``beta`` only choose that k, so they are left out. Nothing given: ``{}``.

        Example:
            >>> EfficientChannelAttention.effective_params(64, kernel_size=None, gamma=2)
            {'kernel_size': 3}
        """
        if not params:
            return {}
        k, gamma, beta = params.get("kernel_size"), params.get("gamma", 2), params.get("beta", 1)
        if k is None:
            whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (gamma, beta))
            if not whole or gamma < 1:
                return dict(params)  # the constructor refuses these
            k = eca_kernel_size(channels, gamma, beta)
        return {"kernel_size": k}

    def gate(self, x: Tensor) -> Tensor:
        """The per-channel gate ``sigmoid(conv1d(mean_hw(x)))``, shaped (B, C, 1, 1)."""
        b, c = x.shape[0], x.shape[1]
        y = x.mean(dim=(2, 3)).reshape(b, 1, c)  # (B, 1, C): channels become the conv's length axis
        y = torch.sigmoid(self.conv(y))  # (B, 1, C)
        return y.reshape(b, c, 1, 1)  # (B, C, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
