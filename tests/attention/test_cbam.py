"""CBAM (Woo et al., ECCV 2018): checked against the paper's formula, not against the module's own code."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from attnsearch.attention.cbam import CBAM
from attnsearch.attention.registry import create_module, module_info

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def paper_gates(m: CBAM, x: torch.Tensor, use_max: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    # Eq. 2: Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), one MLP for both descriptors
    w1, b1, w2, b2 = m.mlp[0].weight, m.mlp[0].bias, m.mlp[2].weight, m.mlp[2].bias

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v @ w1.T + b1) @ w2.T + b2

    logits = mlp(x.mean(dim=(2, 3)))
    if use_max:
        logits = logits + mlp(x.flatten(2).max(dim=2).values)
    mc = torch.sigmoid(logits)  # (B, C)
    x1 = x * mc[:, :, None, None]
    # Eq. 3: Ms = sigmoid(f_kxk([AvgPool_c(F'); MaxPool_c(F')]))
    desc = torch.stack([x1.mean(dim=1), x1.max(dim=1).values], dim=1)
    k = m.spatial.weight.shape[-1]
    ms = torch.sigmoid(F.conv2d(desc, m.spatial.weight, m.spatial.bias, padding=k // 2))[:, 0]  # (B, H, W)
    return mc, ms


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_matches_paper_formula(shape: tuple[int, int, int, int], kernel_size: int) -> None:
    torch.manual_seed(1)
    m = CBAM(shape[1], reduction=2, kernel_size=kernel_size)
    x = torch.randn(shape)
    mc, ms = paper_gates(m, x)
    expected = x * mc[:, :, None, None] * ms[:, None]
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-6)


def test_max_branch_matters() -> None:
    # an avg-only channel gate (the common blog-post bug) must not pass for CBAM
    torch.manual_seed(2)
    m = CBAM(24, reduction=4)
    x = torch.randn(2, 24, 5, 5)
    mc_avg_only, ms = paper_gates(m, x, use_max=False)
    assert not torch.allclose(m(x), x * mc_avg_only[:, :, None, None] * ms[:, None], atol=1e-4)


def test_ratio_is_channel_gate_times_spatial_gate() -> None:
    torch.manual_seed(3)
    m = CBAM(24, reduction=4).double()
    x = torch.rand(3, 24, 5, 7, dtype=torch.float64) + 0.5  # away from 0 so that y / x is the gate
    ratio = (m(x) / x).flatten(2)  # (B, C, H * W)
    mc, ms = paper_gates(m, x)
    for b in range(x.shape[0]):
        s = torch.linalg.svdvals(ratio[b])
        assert s[1] / s[0] < 1e-10  # rank one: a (C,) vector times an (H * W,) vector
        torch.testing.assert_close(ratio[b], torch.outer(mc[b], ms[b].flatten()))


def test_hidden_width_clamped() -> None:
    assert CBAM(64, reduction=16).mlp[0].out_features == 4
    assert CBAM(8, reduction=16).mlp[0].out_features == 1
    assert CBAM(1).mlp[0].weight.shape == (1, 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(5)
    m = CBAM(24, reduction=4).eval()
    x = torch.randn(2, 24, 3, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    assert torch.jit.script(CBAM(1).train())(torch.randn(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_registry() -> None:
    info = module_info("cbam")
    assert info.cls is CBAM and info.params == {"reduction": 16, "kernel_size": 7} and info.arxiv == "1807.06521"
    m = create_module("cbam", 64, reduction=8, kernel_size=3)
    assert isinstance(m, CBAM) and m.mlp[0].out_features == 8 and m.spatial.kernel_size == (3, 3)
    assert create_module("cbam", 64)(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kernel_size": 5}, r"^cbam: kernel_size must be 3 or 7, got 5"),
        ({"kernel_size": 1}, r"^cbam: kernel_size must be 3 or 7, got 1"),
        ({"reduction": 0}, r"^cbam: reduction must be >= 1, got 0"),
    ],
)
def test_bad_params(params: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_module("cbam", 64, **params)
    with pytest.raises(ValueError, match=message.removeprefix("^cbam: ")):
        CBAM(64, **params)
