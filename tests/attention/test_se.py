"""SE (Hu et al., CVPR 2018): checked against the paper's formula, not against the module's own code."""

from __future__ import annotations

import copy

import pytest
import torch

from attnsearch.attention.registry import create_module, module_info
from attnsearch.attention.se import SqueezeExcite

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def paper_se(m: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    # Eq. 2-4 of the paper: z = mean_hw(x); s = sigmoid(W2 relu(W1 z + b1) + b2); out = s_c * x_c
    z = x.mean(dim=(2, 3))
    hidden = torch.relu(z @ m.fc1.weight.T + m.fc1.bias)
    s = torch.sigmoid(hidden @ m.fc2.weight.T + m.fc2.bias)
    return x * s[:, :, None, None]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_shape_finite_gradients(shape: tuple[int, int, int, int], train: bool) -> None:
    torch.manual_seed(0)
    m = SqueezeExcite(shape[1]).train(train)
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if shape[1] == 64:  # wide enough that the ReLU bottleneck is not dead at this seed
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_paper_formula(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(1)
    m = SqueezeExcite(shape[1], reduction=4)
    x = torch.randn(shape)
    torch.testing.assert_close(m(x), paper_se(m, x), rtol=1e-5, atol=1e-6)


def test_gate_constant_over_positions() -> None:
    torch.manual_seed(2)
    m = SqueezeExcite(24, reduction=4).double()
    x = torch.rand(3, 24, 5, 7, dtype=torch.float64) + 0.5  # away from 0 so that y / x is the gate
    ratio = m(x) / x
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()  # a sigmoid gate


@pytest.mark.parametrize(("channels", "reduction", "hidden"), [(64, 16, 4), (1, 16, 1), (8, 16, 1), (24, 4, 6)])
def test_hidden_width_clamped(channels: int, reduction: int, hidden: int) -> None:
    m = SqueezeExcite(channels, reduction=reduction)
    assert m.fc1.weight.shape == (hidden, channels) and m.fc2.weight.shape == (channels, hidden)
    assert m.fc1.bias is not None and m.fc2.bias is not None  # FC layers with bias, as in the paper
    assert sum(p.numel() for p in m.parameters()) == 2 * channels * hidden + hidden + channels


def test_bfloat16() -> None:
    torch.manual_seed(3)
    m = SqueezeExcite(24, reduction=4)
    mb = copy.deepcopy(m).to(torch.bfloat16)
    x = torch.randn(2, 24, 5, 3)
    for train in (True, False):
        yb = mb.train(train)(x.to(torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and yb.shape == x.shape and torch.isfinite(yb).all()
        torch.testing.assert_close(yb.float(), m(x), rtol=5e-2, atol=5e-2)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(4)
    m = SqueezeExcite(24, reduction=4).eval()
    x = torch.randn(2, 24, 3, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    scripted_1 = torch.jit.script(SqueezeExcite(1).train())
    assert scripted_1(torch.randn(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_registry() -> None:
    info = module_info("se")
    assert info.cls is SqueezeExcite and info.params == {"reduction": 16} and info.arxiv == "1709.01507"
    m = create_module("se", 64, reduction=8)
    assert isinstance(m, SqueezeExcite) and m.fc1.out_features == 8
    assert create_module("se", 64)(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)


@pytest.mark.parametrize("reduction", [0, -3])
def test_bad_params(reduction: int) -> None:
    with pytest.raises(ValueError, match=r"reduction must be >= 1, got"):
        SqueezeExcite(64, reduction=reduction)
    with pytest.raises(ValueError, match=r"^se: reduction must be >= 1"):
        create_module("se", 64, reduction=reduction)
    with pytest.raises(ValueError, match=r"se: reduction must be int"):
        create_module("se", 64, reduction=2.5)
