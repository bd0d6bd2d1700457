"""Each module's ``attention_map`` (what ``attnsearch explain`` draws) against its paper's formula computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnsearch.attention.cbam import CBAM
from attnsearch.attention.coord import CoordAttention
from attnsearch.attention.registry import create_module
from attnsearch.attention.self_attention import SelfAttention
from attnsearch.attention.triplet import TripletAttention

SHAPES = [(1, 4, 1, 1), (2, 8, 3, 5), (3, 16, 6, 6)]


def _bn_eval(z: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def _randomise_bn(bn: torch.nn.BatchNorm2d) -> None:
    with torch.no_grad():  # statistics a trained module could hold, so that eval-mode BN is not the identity
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


def _check_map(found: torch.Tensor, shape: tuple[int, int, int, int]) -> None:
    b, _, h, w = shape
    assert found.shape == (b, h, w)
    assert found.min() >= 0 and found.max() <= 1


@pytest.mark.parametrize("shape", SHAPES)
def test_cbam_map_is_the_spatial_gate_of_the_channel_refined_input(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    m = CBAM(shape[1], reduction=2, kernel_size=3).eval()
    x = torch.randn(shape)
    w1, b1, w2, b2 = m.mlp[0].weight, m.mlp[0].bias, m.mlp[2].weight, m.mlp[2].bias

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v @ w1.T + b1) @ w2.T + b2

    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.flatten(2).max(dim=2).values))  # Eq. 2, (B, C)
    refined = x * mc[:, :, None, None]
    desc = torch.stack([refined.mean(dim=1), refined.max(dim=1).values], dim=1)  # [AvgPool_c; MaxPool_c]
    ms = torch.sigmoid(F.conv2d(desc, m.spatial.weight, m.spatial.bias, padding=1))[:, 0]  # Eq. 3
    with torch.no_grad():
        found = m.attention_map(x)
    torch.testing.assert_close(found, ms, rtol=1e-5, atol=1e-6)
    _check_map(found, shape)
    # not the gate of the raw input: the channel refinement comes first
    raw = torch.stack([x.mean(dim=1), x.max(dim=1).values], dim=1)
    unrefined = torch.sigmoid(F.conv2d(raw, m.spatial.weight, m.spatial.bias, padding=1))[:, 0]
    assert not torch.allclose(found, unrefined, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_triplet_map_is_the_hw_branch_gate(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(1)
    m = TripletAttention(shape[1], kernel_size=3).eval()
    _randomise_bn(m.hw.bn)
    x = torch.randn(shape)
    z = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)  # Z-pool over C: [max; mean], (B, 2, H, W)
    z = F.conv2d(z, m.hw.conv.weight, None, padding=1)
    expected = torch.sigmoid(_bn_eval(z, m.hw.bn))[:, 0]
    with torch.no_grad():
        found = m.attention_map(x)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    _check_map(found, shape)


def _hardswish(v: torch.Tensor) -> torch.Tensor:
    return v * torch.clamp(v + 3, 0, 6) / 6


@pytest.mark.parametrize("shape", SHAPES)
def test_coord_map_is_the_channel_mean_of_the_gate_product(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(2)
    m = CoordAttention(shape[1], reduction=2).eval()
    _randomise_bn(m.bn1)
    x = torch.randn(shape)
    h = shape[2]

    def conv1x1(v: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:  # v: (B, C_in, L)
        out = torch.einsum("oc,bcl->bol", conv.weight[:, :, 0, 0], v)
        return out if conv.bias is None else out + conv.bias[None, :, None]

    rows, cols = x.mean(dim=3), x.mean(dim=2)  # (B, C, H), (B, C, W): Eq. 4 and 5
    y = conv1x1(torch.cat([rows, cols], dim=2), m.conv1)  # (B, mip, H + W): Eq. 6, one shared F1
    y = _bn_eval(y[..., None], m.bn1)[..., 0]
    y = _hardswish(y)
    a_h = torch.sigmoid(conv1x1(y[:, :, :h], m.conv_h))  # (B, C, H): Eq. 7
    a_w = torch.sigmoid(conv1x1(y[:, :, h:], m.conv_w))  # (B, C, W): Eq. 8
    expected = (a_h[:, :, :, None] * a_w[:, :, None, :]).mean(dim=1)  # (B, H, W)
    with torch.no_grad():
        found = m.attention_map(x)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    _check_map(found, shape)


@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (2, 8, 3, 5), (2, 16, 4, 6)])
def test_self_attention_map_is_the_centre_row_scaled_by_its_max(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(3)
    m = SelfAttention(shape[1], reduction=2).eval()
    x = torch.randn(shape)
    b, _, h, w = shape
    flat = x.flatten(2)  # (B, C, N)
    wq, bq = m.query.weight[:, :, 0, 0], m.query.bias
    wk, bk = m.key.weight[:, :, 0, 0], m.key.bias
    centre = (h // 2) * w + w // 2
    q = flat[:, :, centre] @ wq.T + bq  # (B, d): the query of the centre position
    k = torch.einsum("dc,bcn->bdn", wk, flat) + bk[None, :, None]  # (B, d, N)
    logits = torch.einsum("bd,bdn->bn", q, k)  # unscaled, as SAGAN
    attn = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    attn = attn / attn.sum(dim=1, keepdim=True)  # softmax over the N key positions
    expected = (attn / attn.max(dim=1, keepdim=True).values).reshape(b, h, w)
    with torch.no_grad():
        found = m.attention_map(x)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    _check_map(found, shape)
    assert torch.allclose(found.flatten(1).max(dim=1).values, torch.ones(b))


def test_self_attention_map_with_downsampled_keys_covers_the_whole_map() -> None:
    torch.manual_seed(4)
    m = SelfAttention(8, reduction=2, downsample=True).eval()
    with torch.no_grad():
        found = m.attention_map(torch.randn(2, 8, 5, 7))
    _check_map(found, (2, 8, 5, 7))
    assert found.flatten(1).std(dim=1).min() > 0  # not constant


@pytest.mark.parametrize("key", ["se", "eca", "linear_attention", "mhsa"])
def test_channel_and_global_modules_have_no_spatial_map(key: str) -> None:
    assert not hasattr(create_module(key, 16), "attention_map")
