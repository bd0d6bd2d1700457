"""Triplet attention (Misra et al., WACV 2021): checked against the paper's three branches written out."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnsearch.attention.registry import create_module, module_info
from attnsearch.attention.triplet import TripletAttention

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def randomise_bn(m: nn.Module) -> None:
    # non-trivial affine and running statistics, so that an eval-mode BN is not the identity
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            with torch.no_grad():
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)


def paper_branch(xr: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, train: bool) -> torch.Tensor:
    # Z-pool over dim 1: [max; mean] -> k x k conv (2 -> 1, no bias) -> BN -> sigmoid -> gate the rotated input
    z = torch.cat([xr.max(dim=1, keepdim=True).values, xr.mean(dim=1, keepdim=True)], dim=1)
    k = conv.weight.shape[-1]
    z = F.conv2d(z, conv.weight, padding=k // 2)
    if train:
        mean, var = z.mean(), z.var(unbiased=False)  # batch statistics of the single BN channel
    else:
        mean, var = bn.running_mean[0], bn.running_var[0]
    z = (z - mean) / torch.sqrt(var + bn.eps) * bn.weight[0] + bn.bias[0]
    return xr * torch.sigmoid(z)


def paper_triplet(m: TripletAttention, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    # branch 1: rotate to (B, W, C, H) so C and H interact, then rotate back
    y_ch = paper_branch(x.permute(0, 3, 1, 2), m.ch.conv, m.ch.bn, train).permute(0, 2, 3, 1)
    # branch 2: rotate to (B, H, C, W) so C and W interact, then rotate back
    y_cw = paper_branch(x.permute(0, 2, 1, 3), m.cw.conv, m.cw.bn, train).permute(0, 2, 1, 3)
    # branch 3: plain spatial attention over (H, W)
    y_hw = paper_branch(x, m.hw.conv, m.hw.bn, train)
    return (y_ch + y_cw + y_hw) / 3


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_param_count_independent_of_channels(kernel_size: int) -> None:
    counts = {
        c: sum(p.numel() for p in TripletAttention(c, kernel_size=kernel_size).parameters()) for c in (3, 24, 64, 256)
    }
    assert set(counts.values()) == {3 * (2 * kernel_size * kernel_size + 2)}, counts
    for gate in TripletAttention(8).children():
        assert gate.conv.bias is None  # the paper's branch conv has no bias (BN follows)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_shape_finite_gradients(shape: tuple[int, int, int, int], train: bool) -> None:
    torch.manual_seed(0)
    m = TripletAttention(shape[1]).train(train)
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_matches_paper_eval(shape: tuple[int, int, int, int], kernel_size: int) -> None:
    torch.manual_seed(1)
    m = TripletAttention(shape[1], kernel_size=kernel_size)
    randomise_bn(m)
    m.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), paper_triplet(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_matches_paper_train(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(2)
    m = TripletAttention(shape[1], kernel_size=3)
    randomise_bn(m)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = paper_triplet(m, x, train=True)
        torch.testing.assert_close(m.train()(x), expected, rtol=1e-5, atol=1e-5)


def test_batch_one_1x1_in_training_uses_running_stats() -> None:
    # BN cannot take batch statistics from one value; that branch falls back to its running statistics
    torch.manual_seed(3)
    m = TripletAttention(1)
    randomise_bn(m)
    before = copy.deepcopy(m.state_dict())
    x = torch.randn(1, 1, 1, 1)
    with torch.no_grad():
        y_train = m.train()(x)
    for name, value in m.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)  # running statistics untouched
    with torch.no_grad():
        torch.testing.assert_close(y_train, m.eval()(x))
        torch.testing.assert_close(y_train, paper_triplet(m, x))
    # batch 1 of a 1x1 map with several channels: only the H-W branch sees a single value
    assert TripletAttention(5).train()(torch.randn(1, 5, 1, 1)).shape == (1, 5, 1, 1)


def test_bfloat16() -> None:
    torch.manual_seed(4)
    m = TripletAttention(24)
    randomise_bn(m)
    mb = copy.deepcopy(m).to(torch.bfloat16)
    x = torch.randn(2, 24, 5, 3)
    for train in (True, False):
        m.train(train)
        yb = mb.train(train)(x.to(torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and yb.shape == x.shape and torch.isfinite(yb).all()
        torch.testing.assert_close(yb.float(), m(x), rtol=5e-2, atol=5e-2)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(5)
    m = TripletAttention(24)
    randomise_bn(m)
    m.eval()
    x = torch.randn(2, 24, 3, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), m(x))
    scripted_train = torch.jit.script(TripletAttention(1).train())
    assert scripted_train(torch.randn(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_registry() -> None:
    info = module_info("triplet")
    assert info.cls is TripletAttention and info.params == {"kernel_size": 7} and info.arxiv == "2010.03045"
    m = create_module("triplet", 64, kernel_size=5)
    assert isinstance(m, TripletAttention) and m.hw.conv.kernel_size == (5, 5)
    assert create_module("triplet", 64)(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)


@pytest.mark.parametrize("kernel_size", [0, 4, -1])
def test_bad_params(kernel_size: int) -> None:
    with pytest.raises(ValueError, match=r"^triplet: kernel_size must be an odd integer >= 1, got"):
        create_module("triplet", 64, kernel_size=kernel_size)
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1"):
        TripletAttention(64, kernel_size=kernel_size)
