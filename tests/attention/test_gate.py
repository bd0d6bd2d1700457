"""Attention gate (Schlemper et al. 2019, Oktay et al. 2018): checked against the formula computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from attnsearch.attention.gate import AttentionGate
from attnsearch.attention.registry import create_module, module_info


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_alpha_and_pooled_features_by_hand() -> None:
    # x: 1 channel on a 2x2 grid; g: 1 channel on a 1x1 grid; stride 2 takes x to g's grid; F_int = 1
    gate = AttentionGate(1, 1, 2, inter_channels=1.0).eval()
    with torch.no_grad():
        gate.theta.weight.copy_(torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]]]))  # W_x: a 2x2 kernel, stride 2
        gate.phi.weight.fill_(3.0)  # W_g
        gate.phi.bias.fill_(-1.0)  # b_g
        gate.psi.weight.fill_(-2.0)  # psi
        gate.psi.bias.fill_(0.5)  # b_psi
        gate.norm.running_mean.fill_(0.25)
        gate.norm.running_var.fill_(4.0)
        gate.norm.weight.fill_(1.5)
        gate.norm.bias.fill_(0.1)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    g = torch.tensor([[[[0.5]]]])
    # W_x x = 1*1 - 1*2 + 0.5*3 + 2*4 = 8.5;  W_g g + b_g = 3*0.5 - 1 = 0.5;  relu(9.0) = 9.0
    # psi: -2 * 9 + 0.5 = -17.5;  BN (eval): 1.5 * (-17.5 - 0.25) / sqrt(4 + 1e-5) + 0.1
    bn = 1.5 * (-17.5 - 0.25) / math.sqrt(4.0 + 1e-5) + 0.1
    alpha = _sigmoid(bn)
    # one coefficient on g's grid, upsampled (bilinear) to the 2x2 map: the same value everywhere
    torch.testing.assert_close(gate.alpha(x, g), torch.full((1, 1, 2, 2), alpha))
    # pooled: the sum over the 4 positions of alpha_i * x_i, over 4: alpha * (1 + 2 + 3 + 4) / 4
    torch.testing.assert_close(gate(x, g), torch.tensor([[alpha * 10.0 / 4]]))


def test_gating_map_is_upsampled_bilinearly_to_x_grid() -> None:
    # stride 1 (x at 2x2, g at 1x2): up(W_g g) resizes the 1x2 map to 2x2 by bilinear interpolation (each row the
    # same, since one source row); F_int = 1, every weight 1 and BN the identity
    gate = AttentionGate(1, 1, 1, inter_channels=1.0).eval()
    with torch.no_grad():
        for conv in (gate.theta, gate.phi, gate.psi):
            conv.weight.fill_(1.0)
        gate.phi.bias.zero_()
        gate.psi.bias.zero_()
    gate.norm.eps = 0.0
    x = torch.tensor([[[[1.0, -5.0], [0.0, 2.0]]]])
    g = torch.tensor([[[[1.0, 3.0]]]])
    # bilinear 1x2 -> 2x2 with half-pixel centres: the two columns keep their values
    f = [[max(0.0, 1.0 + 1.0), max(0.0, -5.0 + 3.0)], [max(0.0, 0.0 + 1.0), max(0.0, 2.0 + 3.0)]]
    expected = torch.tensor([[[[_sigmoid(v) for v in row] for row in f]]])
    torch.testing.assert_close(gate.alpha(x, g), expected)


def test_shapes_gradients_and_range() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(24, 40, 4, inter_channels=0.25)
    assert gate.inter_channels == 6 and gate.theta.kernel_size == (4, 4) and gate.theta.stride == (4, 4)
    x = torch.randn(3, 24, 8, 8, requires_grad=True)
    g = torch.randn(3, 40, 2, 2, requires_grad=True)
    alpha = gate.alpha(x, g)
    assert alpha.shape == (3, 1, 8, 8) and ((alpha > 0) & (alpha < 1)).all()
    out = gate(x, g)
    assert out.shape == (3, 24)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and g.grad is not None and g.grad.abs().sum() > 0
    for name, p in gate.named_parameters():
        if name != "psi.bias":  # a bias before a BatchNorm in training has no gradient: BN removes the mean
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_inter_channels_fraction_and_floor() -> None:
    assert AttentionGate(64).inter_channels == 32
    assert AttentionGate(64, inter_channels=2).inter_channels == 128
    assert AttentionGate(3, inter_channels=0.1).inter_channels == 1  # at least one


def test_registry_entry_and_checks() -> None:
    info = module_info("gate")
    assert info.params == {"gating_slot": None, "inter_channels": 0.5, "aggregation": "concat"}
    assert "1808.08114" in info.arxiv
    with pytest.raises(ValueError, match="aggregation must be one of concat, mean"):
        create_module("gate", 8, aggregation="sum")
    with pytest.raises(ValueError, match="inter_channels must be a fraction > 0"):
        create_module("gate", 8, inter_channels=-0.5)
    with pytest.raises(ValueError, match="gate: gating_slot must be str or null, got 3"):
        create_module("gate", 8, gating_slot=3)


def test_export() -> None:
    torch.manual_seed(5)
    gate = AttentionGate(8, 16, 2).eval()
    x, g = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)
    program = torch.export.export(gate, (x, g))
    torch.testing.assert_close(program.module()(x, g), gate(x, g))
