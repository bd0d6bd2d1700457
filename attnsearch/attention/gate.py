"""Attention gate (additive "grid" attention): a coarse gating map decides which positions of a finer map count.

Papers: Jo Schlemper, Ozan Oktay, Michiel Schaap, Mattias Heinrich, Bernhard Kainz, Ben Glocker, Daniel Rueckert,
"Attention gated networks: learning to leverage salient regions in medical images", Medical Image Analysis 2019,
arXiv 1808.08114 (attention-gated classification, AG-Sononet); the gate itself is Attention U-Net's (Oktay et al.,
"Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018, arXiv 1804.03999).

Mechanism: a gate at slot S sees S's map x (B, C_x, H, W) and a gating signal g (B, C_g, H_g, W_g) from a later,
coarser slot. ``W_x`` (a conv of kernel = stride = s, no bias) takes x to g's grid, ``W_g`` (1x1, with bias b_g)
maps g to the same F_int channels, and

    alpha = sigmoid(BN(psi(relu(W_x x + up(W_g g)))))        (B, 1, H/s, W/s), bilinearly upsampled to (H, W)

with ``psi`` a 1x1 conv to one channel (bias b_psi). ``up`` resizes W_g g bilinearly to W_x x's grid (the identity
when s = H / H_g exactly). The gated features are pooled by the paper's attention-weighted sum over positions,
``sum_i alpha_i x_i`` (its reference code sums the gated map), divided by the number of positions H * W:
``(1 / HW) sum_i alpha_i x_i`` (B, C_x), which joins the classifier next to the backbone's own pooled features
(see :mod:`attnsearch.gating`). The division is a constant per slot, so the classifier's weights absorb it and
the model family is the paper's; it puts the gated features on the scale of the backbone's average-pooled ones.
With the plain sum they are H * W times larger and SGD at the backbone's learning rate diverges (vgg11_bn at width
1/8, 32 px shapes, lr 0.05, one epoch: val_loss 631 with the sum; 2.30 divided by HW, as the plain model's).

Choices: s = H_x // H_g, W_x strided to g's resolution as in Attention U-Net (its Fig. 2 and reference code:
kernel = stride = the subsampling factor); AG-Sononet's reference code keeps s = 1 and resizes g instead, which
costs a full-resolution W_x. The BatchNorm on psi's output follows the issue's formula (the common Attention U-Net
implementations do the same); with it psi's bias has no effect in training. ``inter_channels`` is a fraction of
C_x, ``round(inter_channels * C_x)`` and at least 1 (the reference code's default is C_x // 2, i.e. 0.5).

Blog-post versions vs the paper: many tutorials add W_g g to W_x x without resizing, which only works when both
maps have one size, or upsample g with nearest-neighbour; we use the paper's bilinear grid resampling. Some gate
the input with the pre-sigmoid score or with a softmax over positions (the paper's sigmoid keeps several regions
open). Ours is the sigmoid gate and the paper's weighted sum, scaled by 1 / HW as said above.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import at_least, register_module

__all__ = ["AGGREGATIONS", "AttentionGate"]

AGGREGATIONS = ("concat", "mean")  # one classifier over all pooled features | the paper's separate heads averaged


@register_module(
    "gate",
    paper="Schlemper, Oktay, Schaap, Heinrich, Kainz, Glocker, Rueckert: Attention gated networks: learning to "
    "leverage salient regions in medical images, Medical Image Analysis 2019; Oktay et al.: Attention U-Net, "
    "MIDL 2018",
    arxiv="1808.08114, 1804.03999",
)
class AttentionGate(nn.Module):
    """The additive attention gate of Attention U-Net / AG-Sononet, pooled for a classifier.

    Args:
        channels: channels C_x of the gated slot's map x.
        gating_channels: channels C_g of the gating map g (positional; the model supplies it; default C_x).
        stride: W_x's kernel and stride s, the ratio of x's size to g's (positional; the model supplies it).
        gating_slot: the slot whose map is g; None: the backbone's last block-level slot. Checked against the
            backbone by the space and by ``build_model`` (it must come after the gated slot).
        inter_channels: F_int as a fraction of C_x: ``max(1, round(inter_channels * C_x))``. Must be > 0.
        aggregation: ``concat`` (one classifier over the backbone's and every gate's pooled features) or ``mean``
            (the paper's separate heads, logits averaged). Every gate of one model must agree.

    Raises:
        ValueError: a size below 1, a non-positive inter_channels, an unknown aggregation.

    Example:
        >>> gate = AttentionGate(16, 32, 4, inter_channels=0.5)
        >>> x, g = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 2, 2)
        >>> gate.alpha(x, g).shape, gate(x, g).shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 16]))
    """

    def __init__(
        self,
        channels: int,
        gating_channels: int | None = None,
        stride: int = 1,
        /,
        *,
        gating_slot: str | None = None,
        inter_channels: float = 0.5,
        aggregation: str = "concat",
    ) -> None:
        super().__init__()
        gating_channels = channels if gating_channels is None else gating_channels
        at_least(1, channels=channels, gating_channels=gating_channels, stride=stride)
        if not (math.isfinite(inter_channels) and inter_channels > 0):
            raise ValueError(f"inter_channels must be a fraction > 0 of the channels, got {inter_channels}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if gating_slot is not None and not gating_slot:
            raise ValueError("gating_slot must name a slot, or be null for the last block")
        self.channels = channels
        self.gating_channels = gating_channels
        self.stride = stride
        self.gating_slot = gating_slot
        self.aggregation = aggregation
        inter = max(1, round(inter_channels * channels))  # floor of 1: a tiny map still has a score
        self.inter_channels = inter
        self.theta = nn.Conv2d(channels, inter, kernel_size=stride, stride=stride, bias=False)  # W_x
        self.phi = nn.Conv2d(gating_channels, inter, kernel_size=1, bias=True)  # W_g, b_g
        self.psi = nn.Conv2d(inter, 1, kernel_size=1, bias=True)  # psi, b_psi
        self.norm = nn.BatchNorm2d(1)

    @classmethod
    def effective_params(cls, channels: int, **params: Any) -> dict[str, Any]:
        """The parameters as used at ``channels``: ``inter_channels`` becomes ``F_int / C_x``, the fraction of the
        integer width ``F_int = max(1, round(inter_channels * C_x))`` it gives; the others as given.

        Example:
            >>> AttentionGate.effective_params(8, inter_channels=0.3, aggregation="sum")
            {'inter_channels': 0.25, 'aggregation': 'sum'}
        """
        found = dict(params)
        f = found.get("inter_channels")
        if isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0:
            found["inter_channels"] = max(1, round(f * channels)) / channels
        return found

    def alpha(self, x: Tensor, g: Tensor) -> Tensor:
        """Attention coefficients in [0, 1] at x's size, (B, 1, H, W)."""
        theta = self.theta(x)  # (B, F, H/s, W/s)
        phi = self.phi(g)  # (B, F, H_g, W_g)
        if phi.shape[-2:] != theta.shape[-2:]:
            phi = F.interpolate(phi, size=theta.shape[-2:], mode="bilinear", align_corners=False)
        score = torch.sigmoid(self.norm(self.psi(F.relu(theta + phi))))  # (B, 1, H/s, W/s)
        if score.shape[-2:] != x.shape[-2:]:
            score = F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return score  # (B, 1, H, W)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """The attention-weighted sum over positions divided by their number, ``sum_i alpha_i x_i / HW``: (B, C_x)."""
        return (x * self.alpha(x, g)).mean(dim=(2, 3))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, gating_channels={self.gating_channels}, stride={self.stride}, "
            f"inter_channels={self.inter_channels}, gating_slot={self.gating_slot}, aggregation={self.aggregation}"
        )
