"""Convolutional Block Attention Module (CBAM): a channel gate followed by a spatial gate.

Paper: Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon, "CBAM: Convolutional Block Attention
Module", ECCV 2018, arXiv 1807.06521.

Mechanism: a shared MLP scores both the average-pooled and the max-pooled channel descriptor, the two
scores are summed and squashed into a channel gate ``Mc`` (x' = x * Mc); then the channel-wise mean and
max of x' are stacked into a 2-channel map, a k x k conv and a sigmoid give a spatial gate ``Ms``, and
``out = x' * Ms``.

Blog-post versions vs the paper: many tutorials keep only the average-pooled branch of the channel gate
(that is SE, not CBAM) or give the avg and max branches two separate MLPs; the paper shares one MLP and
sums its outputs before the sigmoid, as we do. A widely copied version references an undefined variable
(e.g. a ``planes`` or ``self.ca`` that its ``__init__`` never sets) and only runs inside the network it
was cut from; this class is self-contained. Some pool the spatial descriptor over the wrong axis or use
``C // r`` with no floor (an empty hidden layer for C < r); we pool over channels and use
``max(1, C // r)``. The authors' released code adds a BatchNorm after the spatial conv; the paper's
equation (Ms = sigmoid(f([AvgPool; MaxPool]))) has none, so we follow the paper and give that conv a bias
instead, which also keeps a batch of one 1x1 map working in training.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from .registry import at_least, reduction_rule, register_module

__all__ = ["CBAM"]


@register_module(
    "cbam",
    paper="Woo, Park, Lee, Kweon: CBAM: Convolutional Block Attention Module, ECCV 2018",
    arxiv="1807.06521",
)
class CBAM(nn.Module):
    """CBAM: channel attention (shared MLP over avg- and max-pooled descriptors), then spatial attention.

    Args:
        channels: number of input channels C.
        reduction: MLP bottleneck ratio r; the hidden width is ``max(1, C // r)``. Must be >= 1.
        kernel_size: side of the spatial gate's conv; the paper compares 3 and 7. Must be 3 or 7.

    Example:
        >>> cbam = CBAM(64, reduction=16, kernel_size=7)
        >>> cbam(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        at_least(1, channels=channels, reduction=reduction)
        if kernel_size not in (3, 7):
            raise ValueError(f"kernel_size must be 3 or 7, got {kernel_size}")
        self.channels = channels
        self.reduction = reduction
        self.kernel_size = kernel_size
        hidden = max(1, channels // reduction)  # floor of 1 so that C < r still gives a working bottleneck
        # one MLP, applied to both descriptors: the weights are shared by construction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=False), nn.Linear(hidden, channels))
        # 2 -> 1 channel: the [mean; max] map in, one spatial logit out; padding k // 2 keeps H, W
        self.spatial = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=True)

    # the MLP's hidden width max(1, C // reduction) decides (kernel_size as given)
    effective_params = reduction_rule()

    def channel_gate(self, x: Tensor) -> Tensor:
        """``Mc = sigmoid(MLP(avg_hw(x)) + MLP(max_hw(x)))``, shaped (B, C, 1, 1)."""
        b, c = x.shape[0], x.shape[1]
        avg = x.mean(dim=(2, 3))  # (B, C)
        mx = x.amax(dim=(2, 3))  # (B, C)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx)).reshape(b, c, 1, 1)  # (B, C, 1, 1)

    def spatial_gate(self, x: Tensor) -> Tensor:
        """``Ms = sigmoid(conv([mean_c(x); max_c(x)]))``, shaped (B, 1, H, W)."""
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.spatial(desc))  # (B, 1, H, W)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)

    def attention_map(self, x: Tensor) -> Tensor:
        """The spatial gate ``Ms`` that ``forward(x)`` applies, (B, H, W) in [0, 1]: computed on the channel-refined
        ``x * Mc``, as in the forward pass (what ``attnsearch explain`` draws)."""
        return self.spatial_gate(x * self.channel_gate(x))[:, 0]  # (B, H, W)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, kernel_size={self.kernel_size}"
