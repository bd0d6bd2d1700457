"""Coordinate attention (Hou et al., CVPR 2021): checked against the paper's formula, not the module's code."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attnsearch.attention.coord import CoordAttention
from attnsearch.attention.registry import create_module, module_info

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def randomise_bn(m: CoordAttention) -> None:
    # non-trivial affine and running statistics, so that an eval-mode BN is not the identity
    with torch.no_grad():
        m.bn1.weight.uniform_(0.5, 1.5)
        m.bn1.bias.uniform_(-0.5, 0.5)
        m.bn1.running_mean.uniform_(-0.5, 0.5)
        m.bn1.running_var.uniform_(0.5, 2.0)


def paper_gates(m: CoordAttention, x: torch.Tensor, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    # Eq. 4-9: z^h = mean over w, z^w = mean over h; f = h_swish(BN(F1([z^h, z^w])));
    # g^h = sigmoid(F_h(f^h)), g^w = sigmoid(F_w(f^w)); out = x * g^h * g^w
    h = x.shape[2]
    w1 = m.conv1.weight[:, :, 0, 0]  # (mip, C)
    f = torch.einsum("mc,bcl->bml", w1, torch.cat([x.mean(dim=3), x.mean(dim=2)], dim=2))  # (B, mip, H + W)
    if train:
        mean, var = f.mean(dim=(0, 2)), f.var(dim=(0, 2), unbiased=False)  # one BN over both directions
    else:
        mean, var = m.bn1.running_mean, m.bn1.running_var
    f = (f - mean[:, None]) / torch.sqrt(var[:, None] + m.bn1.eps) * m.bn1.weight[:, None] + m.bn1.bias[:, None]
    f = f * torch.clamp(f + 3, 0, 6) / 6  # hard-swish
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    g_h = torch.sigmoid(torch.einsum("cm,bml->bcl", m.conv_h.weight[:, :, 0, 0], f_h) + m.conv_h.bias[:, None])
    g_w = torch.sigmoid(torch.einsum("cm,bml->bcl", m.conv_w.weight[:, :, 0, 0], f_w) + m.conv_w.bias[:, None])
    return g_h, g_w  # (B, C, H), (B, C, W)


@pytest.mark.parametrize(
    ("channels", "reduction", "mip"), [(64, 32, 8), (512, 32, 16), (1, 32, 8), (256, 32, 8), (512, 16, 32)]
)
def test_mip(channels: int, reduction: int, mip: int) -> None:
    m = CoordAttention(channels, reduction=reduction)
    assert m.mip == mip
    assert m.conv1.weight.shape == (mip, channels, 1, 1)
    assert m.conv_h.weight.shape == m.conv_w.weight.shape == (channels, mip, 1, 1)
    assert isinstance(m.act, nn.Hardswish)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_finite_gradients_in_eval_mode(shape: tuple[int, int, int, int]) -> None:
    # BatchNorm on its running statistics (training mode: the registry's contract test)
    torch.manual_seed(0)
    m = CoordAttention(shape[1]).eval()
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if shape[1] == 64:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_paper_eval(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(1)
    m = CoordAttention(shape[1], reduction=4)
    randomise_bn(m)
    m.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        g_h, g_w = paper_gates(m, x)
        torch.testing.assert_close(m(x), x * g_h[:, :, :, None] * g_w[:, :, None, :], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_paper_train(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(2)
    m = CoordAttention(shape[1], reduction=4)
    randomise_bn(m)
    x = torch.randn(shape)
    with torch.no_grad():
        g_h, g_w = paper_gates(m, x, train=True)
        torch.testing.assert_close(m.train()(x), x * g_h[:, :, :, None] * g_w[:, :, None, :], rtol=1e-4, atol=1e-5)


def test_ratio_factorises_into_h_and_w_vectors() -> None:
    torch.manual_seed(3)
    m = CoordAttention(24, reduction=4).double()
    randomise_bn(m)
    m.eval()
    x = torch.rand(3, 24, 5, 7, dtype=torch.float64) + 0.5  # away from 0 so that y / x is the gate
    with torch.no_grad():
        ratio = m(x) / x  # (B, C, H, W)
        g_h, g_w = paper_gates(m, x)
    s = torch.linalg.svdvals(ratio)  # per (b, c): an (H, W) matrix
    assert (s[..., 1] / s[..., 0] < 1e-10).all()  # rank one
    torch.testing.assert_close(ratio, g_h[:, :, :, None] * g_w[:, :, None, :])


def test_bfloat16() -> None:
    torch.manual_seed(4)
    m = CoordAttention(24, reduction=4)
    randomise_bn(m)
    mb = copy.deepcopy(m).to(torch.bfloat16)
    x = torch.randn(2, 24, 5, 3)
    for train in (True, False):
        m.train(train)
        yb = mb.train(train)(x.to(torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and yb.shape == x.shape and torch.isfinite(yb).all()
        torch.testing.assert_close(yb.float(), m(x), rtol=5e-2, atol=5e-2)
    assert mb.train()(torch.randn(1, 24, 1, 1, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(5)
    m = CoordAttention(24, reduction=4)
    randomise_bn(m)
    m.eval()
    x = torch.randn(2, 24, 3, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    assert torch.jit.script(CoordAttention(1).train())(torch.randn(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_registry() -> None:
    info = module_info("coord")
    assert info.cls is CoordAttention and info.params == {"reduction": 32} and info.arxiv == "2103.02907"
    m = create_module("coord", 512, reduction=16)
    assert isinstance(m, CoordAttention) and m.mip == 32
    assert create_module("coord", 64)(torch.randn(2, 64, 3, 4)).shape == (2, 64, 3, 4)


@pytest.mark.parametrize("reduction", [0, -1])
def test_bad_params(reduction: int) -> None:
    with pytest.raises(ValueError, match=r"^coord: reduction must be >= 1, got"):
        create_module("coord", 64, reduction=reduction)
    with pytest.raises(ValueError, match=r"reduction must be >= 1"):
        CoordAttention(64, reduction=reduction)
