"""SAGAN self-attention over the spatial positions of a feature map.

Paper: Han Zhang, Ian Goodfellow, Dimitris Metaxas, Augustus Odena, "Self-Attention Generative Adversarial
Networks", ICML 2019, arXiv 1805.08318 (the arXiv v1 formulation: value projection C -> C, no output projection).

Mechanism: every position attends to every other position with softmax(q_i . k_j) over the positions j, from
1x1-conv queries/keys of width C/r and values of width C, and the result is added back through a learnable
scalar gamma that starts at 0, so the module begins as the identity.

Blog-post versions vs the paper: the VGG16 blog posts copy the v1 layout we use here (query and key to C/8,
value to C, ``out = gamma * attn + x``). Several of them then differ from the paper: some divide by sqrt(d)
after the softmax or scale the output (the paper's logits are the plain, unscaled dot products, and a
post-softmax division only shrinks the output), and some initialise gamma to 1 instead of 0, so the
randomly initialised branch disturbs a pretrained backbone from the first step. We use unscaled logits,
softmax over the key positions and gamma = 0 at initialisation. Later versions of the paper (v2) and BigGAN
add a bottlenecked value plus an output 1x1 conv; we do not. BigGAN's max-pooling of keys and values is
available as ``downsample=True``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import at_least, reduction_rule, register_module

__all__ = ["SelfAttention"]


@register_module(
    "self_attention",
    paper="Zhang, Goodfellow, Metaxas, Odena, Self-Attention Generative Adversarial Networks, ICML 2019",
    arxiv="1805.08318",
)
class SelfAttention(nn.Module):
    """SAGAN self-attention block: ``out = gamma * softmax(Q K^T) V + x`` over the H*W positions.

    Args:
        channels: channels C of the input feature map.
        reduction: queries and keys have ``max(1, C // reduction)`` channels.
        downsample: max-pool keys and values by 2 (kernel 2, stride 2, BigGAN-style), which cuts the
            attention cost by about 4. ``ceil_mode=True`` keeps the partial window at an odd edge, so odd
            sizes and 1xN maps work (a 1x1 map stays 1x1).

    Example:
        >>> m = SelfAttention(64, reduction=8)
        >>> m(torch.randn(2, 64, 7, 9)).shape
        torch.Size([2, 64, 7, 9])
    """

    def __init__(self, channels: int, *, reduction: int = 8, downsample: bool = False) -> None:
        super().__init__()
        at_least(1, channels=channels, reduction=reduction)
        inner = max(1, channels // reduction)
        self.downsample = bool(downsample)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        # 0 at init: the block starts as the identity and learns how much non-local evidence to mix in
        self.gamma = nn.Parameter(torch.zeros(1))

    # the query/key width max(1, C // reduction) decides: reductions giving one width are one module
    effective_params = reduction_rule()

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.query(x)
        k = self.key(x)
        v = self.value(x)
        if self.downsample:
            # pooled after the projections, as BigGAN does; ceil_mode keeps odd edges and 1x1 maps
            k = F.max_pool2d(k, kernel_size=2, stride=2, ceil_mode=True)
            v = F.max_pool2d(v, kernel_size=2, stride=2, ceil_mode=True)
        # one head: (B, C', H, W) -> (B, 1, N, C')
        # contiguous: the fused kernels want unit stride along the channels
        q = q.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B, 1, N, d)
        k = k.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B, 1, M, d)
        v = v.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B, 1, M, C)
        # Zero channels added to q and k leave every q_i . k_j unchanged (and zero channels of v give zero outputs,
        # cut off below): they let SDPA pick a fused kernel, O(N) memory, where its fallback would materialise the
        # N x M matrix.
        if x.device.type == "cpu" and v.shape[-1] > q.shape[-1]:
            # the fused CPU kernel needs equal widths; it is then about twice as fast as the fallback here,
            # despite the wider logits
            q, k = _pad_to(q, v.shape[-1]), _pad_to(k, v.shape[-1])
        elif x.device.type == "cuda":
            # the memory-efficient CUDA kernel wants widths in multiples of 8 (16 bytes of bf16); C = 32 at the
            # default reduction gives q and k of 4
            q, k, v = _pad_to(q, _align(q.shape[-1])), _pad_to(k, _align(k.shape[-1])), _pad_to(v, _align(c))
        # scale=1.0: SAGAN's logits are the plain dot products q_i . k_j, not divided by sqrt(d)
        attn = F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :c]  # (B, 1, N, C)
        attn = attn.squeeze(1).transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + self.gamma * attn

    def attention_map(self, x: Tensor) -> Tensor:
        """Where the position nearest the map's centre looks, (B, H, W) in [0, 1] (what ``attnsearch explain``
        draws).

        The query is position (H // 2, W // 2) (for an even side, the lower/right one of the two central rows or
        columns); its row of the attention matrix, ``softmax_j(q_c . k_j)`` over every key position j (unscaled
        logits, as in ``forward``), is laid out on the key grid and divided by its maximum, so the most attended
        position is 1. With ``downsample`` the keys live on the pooled grid, which is resized (bilinear) to H x W.
        """
        b, _, h, w = x.shape
        q = self.query(x)[:, :, h // 2, w // 2]  # (B, d): the centre's query
        k = self.key(x)
        if self.downsample:
            k = F.max_pool2d(k, kernel_size=2, stride=2, ceil_mode=True)
        kh, kw = k.shape[2], k.shape[3]
        logits = torch.einsum("bd,bdm->bm", q, k.flatten(2))  # (B, M): q_c . k_j, unscaled
        row = torch.softmax(logits, dim=1).reshape(b, 1, kh, kw)  # (B, 1, H', W')
        if (kh, kw) != (h, w):
            row = F.interpolate(row, size=(h, w), mode="bilinear", align_corners=False)
        row = row[:, 0]  # (B, H, W)
        return row / row.amax(dim=(1, 2), keepdim=True)


def _align(width: int, multiple: int = 8) -> int:
    return -(-width // multiple) * multiple


def _pad_to(t: Tensor, width: int) -> Tensor:
    """``t`` with zero channels appended to its last dimension up to ``width`` (itself when already there)."""
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))
