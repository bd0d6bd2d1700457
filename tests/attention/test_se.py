"""SE (Hu et al., CVPR 2018): checked against the paper's formula, not against the module's own code."""

from __future__ import annotations


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
