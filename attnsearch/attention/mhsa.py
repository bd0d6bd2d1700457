"""A pre-norm transformer block (multi-head self-attention + MLP) over the positions of a feature map.

Papers: Alexey Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021, arXiv 2010.11929 (ViT: the pre-norm block); Aravind Srinivas, Tsung-Yi Lin, Niki Parmar,
Jonathon Shlens, Pieter Abbeel, Ashish Vaswani, "Bottleneck Transformers for Visual Recognition", CVPR 2021,
arXiv 2101.11605 (BoTNet: multi-head self-attention on a CNN's feature map, position information in the
query-key logits only).

Mechanism: the H*W positions are tokens of width C; ``t = t + MHSA(LN(t)); t = t + MLP(LN(t))`` with softmax
attention scaled by 1/sqrt(head_dim) and a GELU MLP C -> mlp_ratio*C -> C.

Position encoding: a fixed 2D sine-cosine encoding computed from H and W at every call (no parameters, so any
map size works), added to the normalised tokens that make the queries and keys only, not the values and not
the residual stream (as BoTNet puts position into the logits and DETR adds it to q and k). So position decides
where a token looks, the block output carries content only, and zeroed output projections make it exactly the
identity. Layout: for frequency i = 0..f-1, with f = ceil(C / 4) and omega_i = 10000^(-i / f), the channels
4i..4i+3 are sin(row * omega_i), sin(col * omega_i), cos(row * omega_i), cos(col * omega_i); the first C are
kept. For C divisible by 4 that is half the channels for rows and half for columns; for other C the highest
frequencies' last channels are dropped, and C = 1, 2, 3 keep sin(row), then sin(col), then cos(row) of the
lowest frequency.

Blog-post versions vs the paper: blog "MHSA for CNNs" blocks often learn a position table of a fixed H x W
(BoTNet's relative logits, ViT's learned embedding), which breaks or must be interpolated at another input size;
we use a fixed encoding computed from H and W. Some use post-norm or no MLP and no LayerNorm; we follow ViT's
pre-norm block. Some forget the 1/sqrt(head_dim) scaling; we keep it (the standard for transformers, unlike
SAGAN's unscaled logits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import at_least, register_module

__all__ = ["MHSA"]


def _position_encoding(h: int, w: int, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    freqs = (channels + 3) // 4
    omega = torch.pow(10000.0, -torch.arange(freqs, device=device, dtype=torch.float32) / freqs)  # (f,)
    rows = torch.arange(h, device=device, dtype=torch.float32)[:, None, None] * omega  # (H, 1, f)
    cols = torch.arange(w, device=device, dtype=torch.float32)[None, :, None] * omega  # (1, W, f)
    rows = rows.expand(h, w, freqs)
    cols = cols.expand(h, w, freqs)
    # (H, W, f, 4) -> (H*W, 4f): the 4 channels of each frequency sit together, so truncating to C drops the
    # highest frequency first and small C still sees both rows and columns
    enc = torch.stack([rows.sin(), cols.sin(), rows.cos(), cols.cos()], dim=-1).reshape(h * w, 4 * freqs)
    # computed in float32 (bf16 positions and angles are coarse), then cast
    return enc[:, :channels].to(dtype)  # (N, C)


@register_module(
    "mhsa",
    paper=(
        "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021; "
        "Srinivas et al., Bottleneck Transformers for Visual Recognition, CVPR 2021"
    ),
    arxiv="2010.11929, 2101.11605",
)
class MHSA(nn.Module):
    """Pre-norm transformer block on the H*W positions of a feature map, with a 2D sine-cosine position encoding.

    Args:
        channels: channels C of the input feature map (the token width).
        heads: requested number of heads; the heads used (``self.heads``) are the largest divisor of C that
            is not above ``heads``, so C=3 with heads=4 uses 3 heads and C=1 uses 1.
        mlp_ratio: hidden width of the MLP is ``max(1, round(mlp_ratio * C))``.

    Example:
        >>> m = MHSA(64, heads=4, mlp_ratio=2.0)
        >>> m(torch.randn(2, 64, 7, 9)).shape
        torch.Size([2, 64, 7, 9])
    """

    def __init__(self, channels: int, *, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        at_least(1, channels=channels, heads=heads)
        if not (math.isfinite(mlp_ratio) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio must be > 0 and finite, got {mlp_ratio}")
        self.channels = channels
        self.heads = max(h for h in range(1, min(heads, channels) + 1) if channels % h == 0)
        hidden = max(1, round(mlp_ratio * channels))
        self.norm1 = nn.LayerNorm(channels)
        # queries and keys see the position encoding, values do not, hence two projections
        self.qk = nn.Linear(channels, 2 * channels)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    @classmethod
    def effective_params(cls, channels: int, **params: Any) -> dict[str, Any]:
        """The parameters as used at ``channels``: ``heads`` becomes the heads used (the largest divisor of C not
        above it), ``mlp_ratio`` the ratio ``hidden / C`` of the hidden width it gives.

        Example:
            >>> MHSA.effective_params(6, heads=4, mlp_ratio=0.4)
            {'heads': 3, 'mlp_ratio': 0.3333333333333333}
        """
        found = dict(params)
        heads = found.get("heads")
        if isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1:
            found["heads"] = max(h for h in range(1, min(heads, channels) + 1) if channels % h == 0)
        ratio = found.get("mlp_ratio")
        if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio) and ratio > 0:
            found["mlp_ratio"] = max(1, round(ratio * channels)) / channels
        return found

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        u = self.norm1(t)
        pos = _position_encoding(h, w, c, x.device, u.dtype)  # (N, C)
        q, k = self.qk(u + pos).chunk(2, dim=-1)  # (B, N, C) each
        v = self.v(u)  # (B, N, C)
        q = q.reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, C/heads)
        k = k.reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, C/heads)
        v = v.reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, C/heads)
        a = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C/heads)
        a = a.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        t = t + self.proj(a)
        t = t + self.fc2(self.act(self.fc1(self.norm2(t))))
        # contiguous: the transposed view would otherwise hand channels-last strides to the next layer
        return t.transpose(1, 2).reshape(b, c, h, w).contiguous()  # (B, C, H, W)
