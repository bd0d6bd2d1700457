"""Coordinate attention: channel attention factorised into a height gate and a width gate.

Paper: Qibin Hou, Daquan Zhou, Jiashi Feng, "Coordinate Attention for Efficient Mobile Network Design",
CVPR 2021, arXiv 2103.02907.

Mechanism: average-pool along W (one vector per row) and along H (one vector per column), encode both
with one shared 1x1 conv (C -> mip), BatchNorm and hard-swish, split back into the row part and the column
part, and map each with its own 1x1 conv (mip -> C) and a sigmoid into ``a_h`` (B, C, H, 1) and
``a_w`` (B, C, 1, W); ``out = x * a_h * a_w``.

Blog-post versions vs the paper: several tutorials concatenate the two pooled tensors without transposing
the W part first (which only works for square maps), use ReLU where the paper uses hard-swish, drop the
``max(8, ...)`` floor on the bottleneck width, or share one conv for both output gates; we follow the
paper and the authors' code: transpose, hard-swish, ``mip = max(8, C // reduction)``, two output convs.
The authors' code also leaves a bias on the shared conv that BatchNorm cancels right away; we drop it.

Batch of one in training: the BatchNorm sees the H + W >= 2 pooled positions of each sample, so it always
has batch statistics, even for one 1x1 map; no special case is needed.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from .registry import at_least, reduction_rule, register_module

__all__ = ["CoordAttention"]


@register_module(
    "coord",
    paper="Hou, Zhou, Feng: Coordinate Attention for Efficient Mobile Network Design, CVPR 2021",
    arxiv="2103.02907",
)
class CoordAttention(nn.Module):
    """Coordinate attention: ``x * a_h * a_w`` with direction-aware gates from pooled rows and columns.

    Args:
        channels: number of input channels C.
        reduction: bottleneck ratio; the shared width is ``mip = max(8, C // reduction)``. Must be >= 1.

    Example:
        >>> ca = CoordAttention(64, reduction=32)
        >>> ca.mip
        8
        >>> ca(torch.randn(2, 64, 8, 6)).shape
        torch.Size([2, 64, 8, 6])
    """

    def __init__(self, channels: int, *, reduction: int = 32) -> None:
        super().__init__()
        at_least(1, channels=channels, reduction=reduction)
        self.channels = channels
        self.reduction = reduction
        self.mip = max(8, channels // reduction)  # the paper's floor keeps thin layers from a tiny bottleneck
        self.conv1 = nn.Conv2d(channels, self.mip, kernel_size=1, bias=False)  # BN right after: a bias is moot
        self.bn1 = nn.BatchNorm2d(self.mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(self.mip, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(self.mip, channels, kernel_size=1)

    # the width mip = max(8, C // reduction) decides: reductions giving one mip are one module
    effective_params = reduction_rule(floor=8)

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The gates ``(a_h, a_w)``, shaped (B, C, H, 1) and (B, C, 1, W)."""
        h, w = x.shape[2], x.shape[3]
        pooled_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1): average over each row
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1): columns, laid out like rows
        y = torch.cat([pooled_h, pooled_w], dim=2)  # (B, C, H + W, 1): one shared encoding for both directions
        y = self.act(self.bn1(self.conv1(y)))  # (B, mip, H + W, 1)
        y_h, y_w = torch.split(y, [h, w], dim=2)  # (B, mip, H, 1), (B, mip, W, 1)
        a_h = torch.sigmoid(self.conv_h(y_h))  # (B, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (B, C, 1, W)
        return a_h, a_w

    def forward(self, x: Tensor) -> Tensor:
        a_h, a_w = self.gates(x)
        return x * a_h * a_w

    def attention_map(self, x: Tensor) -> Tensor:
        """The mean over channels of the product of the gates, ``mean_c(a_h * a_w)``, (B, H, W) in [0, 1]: the
        factor ``forward(x)`` scales each position by, averaged over channels (what ``attnsearch explain`` draws).
        Its BatchNorm behaves as in ``forward``: call it in eval mode to leave the running statistics alone."""
        a_h, a_w = self.gates(x)
        return (a_h * a_w).mean(dim=1)  # (B, C, H, 1) * (B, C, 1, W) -> (B, C, H, W) -> (B, H, W)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, mip={self.mip}"
