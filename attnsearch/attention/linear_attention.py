"""Linear (kernelised) attention over the spatial positions of a feature map, O(N) in N = H*W.

Paper: Angelos Katharopoulos, Apoorv Vyas, Nikolaos Pappas, François Fleuret, "Transformers are RNNs: Fast
Autoregressive Transformers with Linear Attention", ICML 2020, arXiv 2006.16236.

Mechanism: the softmax similarity is replaced by phi(q_i) . phi(k_j) with phi(x) = elu(x) + 1, so
``out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps)``; the (d x C) matrix
sum_j phi(k_j) v_j^T and the d-vector sum_j phi(k_j) are formed once, and no N x N matrix ever exists.

Blog-post versions vs the paper: a common "LinearAttention" in blog posts and CNN-attention collections is
quadratic softmax attention under another name (``softmax(Q K^T) V``, an N x N matrix); others drop the
denominator (no normalisation, so the output grows with N) or apply the feature map only to the keys. We
follow the paper: phi = elu + 1 on both queries and keys, the associativity trick ``phi(Q) (phi(K)^T V)``
with the per-query normaliser, eps = 1e-6 in the denominator. What the paper does not fix for images and we
choose: 1x1-conv projections (queries and keys to C/r, values to C), a 1x1 output projection, and a residual
``x + gamma * proj(attn)`` with a learnable scalar gamma initialised to 0, so the module starts as the identity.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import at_least, effective_reduction, register_module

__all__ = ["LinearAttention"]

_EPS = 1e-6


def _attend(q: Tensor, k: Tensor, v: Tensor, eps: float) -> Tensor:
    # q, k: (B, h, dh, N) already through phi; v: (B, h, cv, N)
    # Sums over all N positions in float32: in bf16 (8-bit significand) a sum of hundreds of positive terms
    # loses the small ones entirely, so the numerator and the normaliser would be badly wrong for large maps.
    q, k, v = q.float(), k.float(), v.float()
    kv = torch.matmul(k, v.transpose(-1, -2))  # (B, h, dh, cv) = sum_j phi(k_j) v_j^T
    k_sum = k.sum(dim=-1, keepdim=True)  # (B, h, dh, 1) = sum_j phi(k_j)
    q_t = q.transpose(-1, -2)  # (B, h, N, dh)
    num = torch.matmul(q_t, kv)  # (B, h, N, cv)
    den = torch.matmul(q_t, k_sum)  # (B, h, N, 1), > 0 because phi > 0
    return num / (den + eps)


@register_module(
    "linear_attention",
    paper=(
        "Katharopoulos, Vyas, Pappas, Fleuret, Transformers are RNNs: Fast Autoregressive Transformers "
        "with Linear Attention, ICML 2020"
    ),
    arxiv="2006.16236",
)
class LinearAttention(nn.Module):
    """Linear attention block: ``out = x + gamma * proj(linear_attention(phi(Q), phi(K), V))``.

    Args:
        channels: channels C of the input feature map.
        reduction: queries and keys have ``d = max(1, C // reduction)`` channels; values keep C.
        heads: requested number of heads. The query/key channels d and the value channels C are split into
            the same number of heads, so the heads used are the largest divisor of gcd(d, C) that is not
            above ``heads`` (``self.heads``); e.g. C=24, reduction=8 gives d=3 and at most 3 heads, and
            C=64 with heads=4 gives 4 heads of 2 query/key and 16 value channels.

    Example:
        >>> m = LinearAttention(64, reduction=8, heads=2)
        >>> m(torch.randn(2, 64, 7, 9)).shape
        torch.Size([2, 64, 7, 9])
    """

    def __init__(self, channels: int, *, reduction: int = 8, heads: int = 1) -> None:
        super().__init__()
        at_least(1, channels=channels, reduction=reduction, heads=heads)
        inner = max(1, channels // reduction)
        common = math.gcd(inner, channels)
        self.heads = max(h for h in range(1, min(heads, common) + 1) if common % h == 0)
        self.eps = _EPS
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)
        # 0 at init: the block starts as the identity
        self.gamma = nn.Parameter(torch.zeros(1))

    @classmethod
    def effective_params(cls, channels: int, **params: Any) -> dict[str, Any]:
        """The parameters as used at ``channels``: ``reduction`` becomes the canonical one for the width
        ``d = max(1, C // reduction)`` it gives (the smallest power of two giving d, else the largest reduction that
        does: :func:`~attnsearch.attention.registry.effective_reduction`), ``heads`` the heads used.

        Example:
            >>> LinearAttention.effective_params(8, reduction=16, heads=4)
            {'reduction': 8, 'heads': 1}
        """
        found = dict(params)
        reduction = found.get("reduction", 8)
        if "reduction" in found:
            found["reduction"] = effective_reduction(channels, reduction)
        heads = found.get("heads")
        if _whole(heads) and _whole(reduction):
            common = math.gcd(max(1, channels // reduction), channels)
            found["heads"] = max(h for h in range(1, min(heads, common) + 1) if common % h == 0)
        return found

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        q = F.elu(self.query(x)) + 1.0
        k = F.elu(self.key(x)) + 1.0
        v = self.value(x)
        q = q.reshape(b, self.heads, -1, n)  # (B, heads, d/heads, N)
        k = k.reshape(b, self.heads, -1, n)  # (B, heads, d/heads, N)
        v_heads = v.reshape(b, self.heads, -1, n)  # (B, heads, C/heads, N)
        # autocast would run the matmuls in bf16/fp16 despite the float32 casts inside, so switch it off here;
        # TorchScript needs a constant device type, eager code covers whatever device x is on
        if torch.jit.is_scripting():
            with torch.autocast(device_type="cuda", enabled=False), torch.autocast(device_type="cpu", enabled=False):
                attn = _attend(q, k, v_heads, self.eps)
        elif torch.amp.is_autocast_available(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                attn = _attend(q, k, v_heads, self.eps)
        else:  # a device without autocast (e.g. meta)
            attn = _attend(q, k, v_heads, self.eps)
        attn = attn.to(v.dtype).transpose(-1, -2).reshape(b, c, h, w)  # (B, heads, N, C/heads) -> (B, C, H, W)
        return x + self.gamma * self.proj(attn)


def _whole(value: Any) -> bool:
    """An int >= 1 (not a bool): a value the constructor accepts as a size."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
