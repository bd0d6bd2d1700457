"""ECA (Wang et al., CVPR 2020): checked against the paper's formula, not against the module's own code."""

from __future__ import annotations


import pytest
import torch

from attnsearch.attention.eca import EfficientChannelAttention, eca_kernel_size
from attnsearch.attention.registry import create_module, module_info

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def paper_eca(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Eq. 4 of the paper with k taps: w_c = sigmoid(sum_j a_j y_{c + j - k // 2}), y zero outside [0, C)
    b, c = x.shape[:2]
    k = weight.numel()
    taps = weight.reshape(k)
    y = x.mean(dim=(2, 3))
    pad = torch.zeros(b, k // 2, dtype=x.dtype)
    y_padded = torch.cat([pad, y, pad], dim=1)
    logits = sum(taps[j] * y_padded[:, j : j + c] for j in range(k))
    return x * torch.sigmoid(logits)[:, :, None, None]


@pytest.mark.parametrize(
    ("channels", "expected"),
    # by hand: t = int((log2 C + 1) / 2); odd t stays, even t goes up by one
    [(64, 3), (256, 5), (1, 1), (3, 1), (16, 3), (24, 3), (32, 3), (128, 5), (512, 5), (1024, 5), (2048, 7)],
)
def test_adaptive_kernel_size(channels: int, expected: int) -> None:
    m = EfficientChannelAttention(channels)
    assert m.kernel_size == expected == eca_kernel_size(channels)
    assert m.conv.weight.shape == (1, 1, expected)
    assert m.conv.bias is None
    assert sum(p.numel() for p in m.parameters()) == expected


def test_gamma_beta_and_small_channel_clamp() -> None:
    assert EfficientChannelAttention(64, gamma=1, beta=1).kernel_size == 7  # int(6 + 1) = 7
    assert EfficientChannelAttention(256, gamma=3, beta=4).kernel_size == 5  # int(12 / 3) = 4 -> 5
    assert EfficientChannelAttention(2, gamma=1, beta=4).kernel_size == 3  # 5, clamped to 2 * 2 - 1
    assert EfficientChannelAttention(1, gamma=1, beta=4).kernel_size == 1  # 5, clamped to 1


def test_kernel_size_override() -> None:
    m = EfficientChannelAttention(64, kernel_size=7)
    assert m.kernel_size == 7 and m.conv.weight.shape == (1, 1, 7)
    assert EfficientChannelAttention(1, kernel_size=5)(torch.randn(2, 1, 3, 3)).shape == (2, 1, 3, 3)
    for bad in (4, 0, -1):
        with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1"):
            EfficientChannelAttention(64, kernel_size=bad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size", [None, 5])
def test_matches_paper_formula(shape: tuple[int, int, int, int], kernel_size: int | None) -> None:
    torch.manual_seed(1)
    m = EfficientChannelAttention(shape[1], kernel_size=kernel_size)
    x = torch.randn(shape)
    torch.testing.assert_close(m(x), paper_eca(m.conv.weight.detach(), x), rtol=1e-5, atol=1e-6)


def test_gate_constant_over_positions() -> None:
    torch.manual_seed(2)
    m = EfficientChannelAttention(24, kernel_size=5).double()
    x = torch.rand(3, 24, 5, 7, dtype=torch.float64) + 0.5  # away from 0 so that y / x is the gate
    ratio = m(x) / x
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(4)
    m = EfficientChannelAttention(24).eval()
    x = torch.randn(2, 24, 3, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    assert torch.jit.script(EfficientChannelAttention(1).train())(torch.randn(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_registry() -> None:
    info = module_info("eca")
    assert info.cls is EfficientChannelAttention and info.arxiv == "1910.03151"
    assert info.params == {"kernel_size": None, "gamma": 2, "beta": 1}
    m = create_module("eca", 64, kernel_size=5)
    assert isinstance(m, EfficientChannelAttention) and m.kernel_size == 5
    assert create_module("eca", 256, kernel_size=None).kernel_size == 5
    assert create_module("eca", 64)(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kernel_size": 4}, r"^eca: kernel_size must be an odd integer >= 1"),
        ({"kernel_size": 0}, r"^eca: kernel_size must be an odd integer >= 1"),
        ({"gamma": 0}, r"^eca: gamma must be >= 1, got 0"),
        ({"beta": -1}, r"^eca: beta must be >= 0, got -1"),
        ({"kernel_size": 3.0}, r"^eca: kernel_size must be int or null"),
    ],
)
def test_bad_params(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_module("eca", 64, **params)
