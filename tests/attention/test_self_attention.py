"""SAGAN self-attention (Zhang et al., ICML 2019): checked against the paper's formula, not the module's code."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from attnsearch.attention.self_attention import SelfAttention
from attnsearch.attention.registry import create_module, module_info
from attnsearch.costs import count_flops

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def _conv1x1(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    # a 1x1 conv is a matrix product over channels at every position: (B, C, N) -> (B, C', N)
    return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], x.flatten(2)) + conv.bias[None, :, None]


def _pool2(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # 2x2 max-pool, stride 2; odd edges pad with -inf so the partial window keeps its own maximum
    b, c, _ = t.shape
    t = F.pad(t.view(b, c, h, w), (0, w % 2, 0, h % 2), value=-math.inf)
    hp, wp = t.shape[2] // 2, t.shape[3] // 2
    return t.view(b, c, hp, 2, wp, 2).amax(dim=(3, 5)).flatten(2)


def paper_sagan(m: SelfAttention, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    # s_ij = q_i . k_j (unscaled); beta_ij = softmax_j(s_ij); o_i = sum_j beta_ij v_j; y = gamma * o + x
    b, c, h, w = x.shape
    q, k, v = _conv1x1(m.query, x), _conv1x1(m.key, x), _conv1x1(m.value, x)
    if m.downsample:
        k, v = _pool2(k, h, w), _pool2(v, h, w)
    logits = torch.bmm(q.transpose(1, 2), k) * scale  # (B, N, M)
    beta = torch.softmax(logits, dim=-1)
    o = torch.bmm(v, beta.transpose(1, 2))  # (B, C, N)
    return x + m.gamma * o.view(b, c, h, w)


def _gated(channels: int, gamma: float = 0.7, **params: object) -> SelfAttention:
    m = SelfAttention(channels, **params)  # type: ignore[arg-type]
    with torch.no_grad():
        m.gamma.fill_(gamma)
    return m


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("downsample", [False, True])
def test_identity_at_init(shape: tuple[int, int, int, int], downsample: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    assert torch.equal(SelfAttention(shape[1], downsample=downsample)(x), x)


@pytest.mark.parametrize("shape", [*SHAPES, (2, 16, 5, 7), (1, 8, 1, 6), (2, 8, 2, 2)])
@pytest.mark.parametrize("downsample", [False, True])
def test_matches_paper(shape: tuple[int, int, int, int], downsample: bool) -> None:
    torch.manual_seed(0)
    m = _gated(shape[1], downsample=downsample)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), paper_sagan(m, x), atol=1e-5, rtol=1e-5)


def test_logits_are_not_scaled() -> None:
    # SAGAN uses plain dot products; a 1/sqrt(d) scaling (the transformer habit) is a different function
    torch.manual_seed(0)
    m = _gated(64, reduction=8)
    x = torch.randn(2, 64, 6, 6)
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(y, paper_sagan(m, x), atol=1e-5, rtol=1e-5)
        scaled = paper_sagan(m, x, scale=1 / math.sqrt(8))
    assert (y - scaled).abs().max() > 1e-2


def test_permutation_equivariant() -> None:
    # no position information: permuting the H*W positions permutes the output the same way
    torch.manual_seed(0)
    m = _gated(16, reduction=4)
    x = torch.randn(2, 16, 5, 7)
    perm = torch.randperm(35)
    x_perm = x.flatten(2)[:, :, perm].reshape(x.shape)
    with torch.no_grad():
        y, y_perm = m(x), m(x_perm)
    torch.testing.assert_close(y_perm.flatten(2), y.flatten(2)[:, :, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("downsample", [False, True])
def test_global_receptive_field(downsample: bool) -> None:
    torch.manual_seed(0)
    m = _gated(8, reduction=2, downsample=downsample)
    x = torch.randn(1, 8, 9, 11, requires_grad=True)
    m(x)[0, :, 0, 0].sum().backward()
    reach = x.grad.abs().sum(dim=1)[0]  # (H, W)
    if downsample:
        # max-pooled keys/values pass gradient only to each window's maximum: every 2x2 window gets some
        reach = F.pad(reach, (0, 1, 0, 1)).view(5, 2, 6, 2).sum(dim=(1, 3))
    assert (reach > 0).all(), reach  # the far corner included


def test_flops_grow_quadratically() -> None:
    # counted on the meta device, where SDPA takes its plain matmul path (aten.bmm), which the counter knows
    m = _gated(16, reduction=8).eval()
    flops = [count_flops(m, (1, 16, side, side)) for side in (8, 16, 32)]  # N, 4N, 16N positions
    assert flops[0] > 0
    assert flops[1] / flops[0] > 8 and flops[2] / flops[1] > 8, flops


def test_training_memory_stays_linear_on_cpu() -> None:
    # the fused CPU kernel keeps no N x N matrix for backward: saved tensors grow like N, not N^2
    torch.manual_seed(0)
    m = _gated(16, reduction=8)
    saved = []
    for side in (16, 32, 64):  # N, 4N, 16N positions
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(torch.randn(2, 16, side, side, requires_grad=True))
        saved.append(total)
    assert 3.5 < saved[1] / saved[0] < 4.5 and 3.5 < saved[2] / saved[1] < 4.5, saved


def test_gradients_with_downsample() -> None:
    torch.manual_seed(0)
    m = _gated(8, gamma=0.5, downsample=True)
    x = torch.randn(2, 8, 7, 5, requires_grad=True)
    (m(x) * torch.randn(2, 8, 7, 5)).sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", SHAPES)
def test_bfloat16_with_downsample(shape: tuple[int, int, int, int]) -> None:
    # the pooled keys and values in bf16 (without downsample: the registry's contract test)
    torch.manual_seed(0)
    m = _gated(shape[1], gamma=0.5, downsample=True)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = m(x)
        y = copy.deepcopy(m).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("downsample", [False, True])
def test_export_and_script(downsample: bool) -> None:
    torch.manual_seed(0)
    m = _gated(24, gamma=0.5, downsample=downsample).eval()
    x = torch.randn(2, 24, 7, 5)
    with torch.no_grad():
        ref = m(x)
        exported = torch.export.export(m, (x,))
        torch.testing.assert_close(exported.module()(x), ref)
        scripted = torch.jit.script(m)
        torch.testing.assert_close(scripted(x), ref)


def test_meta_device() -> None:
    # nothing is created on a fixed device: a module and input on "meta" give a "meta" output
    m = SelfAttention(16, downsample=True).to("meta")
    y = m(torch.empty(2, 16, 5, 7, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 16, 5, 7)


@pytest.mark.parametrize("reduction", [0, -3])
def test_bad_params(reduction: int) -> None:
    with pytest.raises(ValueError, match=rf"reduction must be >= 1, got {reduction}"):
        SelfAttention(8, reduction=reduction)
    with pytest.raises(ValueError, match=r"^self_attention: reduction must be >= 1"):
        create_module("self_attention", 8, reduction=reduction)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        SelfAttention(0)


def test_registry() -> None:
    info = module_info("self_attention")
    assert info.cls is SelfAttention and info.arxiv == "1805.08318"
    assert info.params == {"reduction": 8, "downsample": False}
    m = create_module("self_attention", 32, reduction=4, downsample=True)
    assert isinstance(m, SelfAttention) and m.query.out_channels == 8 and m.downsample
    assert create_module("self_attention", 5).query.out_channels == 1  # max(1, 5 // 8)
    assert m(torch.randn(1, 32, 3, 3)).shape == (1, 32, 3, 3)
