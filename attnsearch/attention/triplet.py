"""Triplet attention: three rotated Z-pool + conv gates capturing C-H, C-W and H-W interactions.

Paper: Diganta Misra, Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou, "Rotate to Attend:
Convolutional Triplet Attention Module", WACV 2021, arXiv 2010.03045.

Mechanism: each of three branches rotates the tensor so that a different axis plays the role of
"channels", Z-pools that axis (stack of its max and its mean: 2 maps), runs a k x k conv (2 -> 1, no bias),
BatchNorm and a sigmoid to get a gate over the remaining two axes, gates its rotated input and rotates back;
the three results are averaged. The parameter count (3 convs of 2 * k * k weights, 3 one-channel BNs) does
not depend on C.

Blog-post versions vs the paper: some tutorials drop the BatchNorm or give the conv a bias, others sum the
three branches without the 1/3, forget to rotate a branch back (only correct for square, C = H = W inputs),
or use the mean alone instead of Z-pool's [max; mean]. We follow the paper and the authors' code on all of
these. Since each branch computes ``rotated_x * gate`` and rotates back, the output equals
``x * (g_ch + g_cw + g_hw) / 3`` with each gate rotated back to broadcast against x; we compute it in that
form, so the gate is applied once as ``x * gate``.

Layouts (fixed, so that weights can be read against the paper): the C-H branch works on x rotated to
(B, W, C, H) and convolves over the (C, H) plane; the C-W branch on (B, H, C, W), conv over (C, W); the
H-W branch on x itself, conv over (H, W).

Batch of one 1x1 map in training: a branch whose BatchNorm would see a single value per channel
(B * plane size == 1) has no batch statistics, and PyTorch raises there. For exactly that shape, and only
in training, the branch normalises with the running statistics (as in eval) and leaves them untouched;
every other case is plain BatchNorm. The choice depends on shapes only, so export and scripting still work.
The BN momentum is PyTorch's default (0.1), like the backbones' BNs; the authors' code uses 0.01.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import at_least, register_module

__all__ = ["TripletAttention"]


class _ZPoolGate(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, A, P, Q), A the axis being pooled away; the gate lives on the (P, Q) plane
        z = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # (B, 2, P, Q)
        z = self.conv(z)  # (B, 1, P, Q)
        if self.training and z.shape[0] * z.shape[2] * z.shape[3] == 1:
            # one value per channel: no batch statistics exist, so use the running ones for this step
            z = F.batch_norm(
                z, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, False, 0.0, self.bn.eps
            )
        else:
            z = self.bn(z)
        return torch.sigmoid(z)  # (B, 1, P, Q)


@register_module(
    "triplet",
    paper="Misra, Nalamada, Arasanipalai, Hou: Rotate to Attend: Convolutional Triplet Attention Module, WACV 2021",
    arxiv="2010.03045",
)
class TripletAttention(nn.Module):
    """Triplet attention: the average of a C-H, a C-W and an H-W gate, each from Z-pool, conv, BN, sigmoid.

    Args:
        channels: number of input channels C (the module's parameters do not depend on it).
        kernel_size: side of each branch's conv. Must be odd and >= 1.

    Example:
        >>> ta = TripletAttention(64, kernel_size=7)
        >>> ta(torch.randn(2, 64, 8, 6)).shape
        torch.Size([2, 64, 8, 6])
        >>> sum(p.numel() for p in ta.parameters())  # 3 * (2 * 7 * 7 + 2), for any C
        300
    """

    def __init__(self, channels: int, *, kernel_size: int = 7) -> None:
        super().__init__()
        at_least(1, channels=channels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.ch = _ZPoolGate(kernel_size)  # C-H interaction: pools W away
        self.cw = _ZPoolGate(kernel_size)  # C-W interaction: pools H away
        self.hw = _ZPoolGate(kernel_size)  # H-W interaction: pools C away (spatial attention)

    def gate(self, x: Tensor) -> Tensor:
        """The averaged gate ``(g_ch + g_cw + g_hw) / 3``, broadcastable against x (B, C, H, W)."""
        g_ch = self.ch(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, W, C, H) -> (B, 1, C, H) -> (B, C, H, 1)
        g_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (B, H, C, W) -> (B, 1, C, W) -> (B, C, 1, W)
        g_hw = self.hw(x)  # (B, 1, H, W)
        return (g_ch + g_cw + g_hw) / 3.0  # (B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)

    def attention_map(self, x: Tensor) -> Tensor:
        """The H-W branch's gate ``g_hw`` (spatial attention, the third of the averaged gate), (B, H, W) in [0, 1],
        as ``forward(x)`` computes it (what ``attnsearch explain`` draws). Its BatchNorm behaves as in ``forward``:
        call it in eval mode to leave the running statistics alone."""
        return self.hw(x)[:, 0]  # (B, H, W)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
