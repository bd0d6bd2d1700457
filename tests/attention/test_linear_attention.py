"""Linear attention (Katharopoulos et al., ICML 2020): checked against the paper's formula and measured O(N) cost."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from attnsearch.attention.linear_attention import LinearAttention
from attnsearch.attention.registry import create_module, module_info
from attnsearch.costs import count_flops

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 64, 8, 6)]


def _conv1x1(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    # a 1x1 conv is a matrix product over channels at every position: (B, C, N) -> (B, C', N)
    return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], x.flatten(2)) + conv.bias[None, :, None]


def paper_linear_naive(m: LinearAttention, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # Eq. 4-6 evaluated the quadratic way: S_ij = phi(q_i) . phi(k_j), rows normalised, out_i = sum_j S_ij v_j
    b, c, h, w = x.shape
    n, heads = h * w, m.heads
    phi_q = (F.elu(_conv1x1(m.query, x)) + 1).view(b, heads, -1, n)  # (B, heads, dh, N)
    phi_k = (F.elu(_conv1x1(m.key, x)) + 1).view(b, heads, -1, n)
    v = _conv1x1(m.value, x).view(b, heads, -1, n)  # (B, heads, ch, N)
    sim = phi_q.transpose(-1, -2) @ phi_k  # (B, heads, N, N): the matrix linear attention never builds
    a = sim / (sim.sum(dim=-1, keepdim=True) + eps)
    out = (a @ v.transpose(-1, -2)).transpose(-1, -2).reshape(b, c, n)  # (B, C, N)
    return x + m.gamma * _conv1x1(m.proj, out).view(b, c, h, w)


def _gated(channels: int, gamma: float = 0.7, **params: object) -> LinearAttention:
    m = LinearAttention(channels, **params)  # type: ignore[arg-type]
    with torch.no_grad():
        m.gamma.fill_(gamma)
    return m


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_at_init(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    assert torch.equal(LinearAttention(shape[1], heads=2)(x), x)


@pytest.mark.parametrize("shape", [*SHAPES, (2, 16, 5, 7), (1, 32, 1, 6)])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_matches_naive_quadratic(shape: tuple[int, int, int, int], heads: int) -> None:
    torch.manual_seed(0)
    m = _gated(shape[1], reduction=4, heads=heads)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), paper_linear_naive(m, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("channels", "reduction", "heads", "expected"),
    [(64, 8, 4, 4), (24, 8, 4, 3), (64, 8, 3, 2), (1, 8, 4, 1), (30, 5, 8, 6), (30, 4, 8, 1), (16, 8, 1, 1)],
)
def test_effective_heads(channels: int, reduction: int, heads: int, expected: int) -> None:
    # largest divisor of gcd(max(1, C // r), C) not above the requested heads
    assert LinearAttention(channels, reduction=reduction, heads=heads).heads == expected


def _flops(m: torch.nn.Module, side: int) -> int:
    return count_flops(m, (1, 16, side, side))


def _saved_bytes(m: torch.nn.Module, side: int) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x = torch.randn(2, 16, side, side, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x)
    return total


def test_flops_grow_linearly() -> None:
    torch.manual_seed(0)
    m = _gated(16, reduction=4).eval()
    flops = [_flops(m, side) for side in (8, 16, 32)]  # N, 4N, 16N positions
    assert flops[0] > 0
    assert 3.5 < flops[1] / flops[0] < 4.5 and 3.5 < flops[2] / flops[1] < 4.5, flops
    # the same measurement on SAGAN's softmax attention is superlinear (see test_self_attention)
    from attnsearch.attention.self_attention import SelfAttention

    quadratic = SelfAttention(16, reduction=4).eval()
    q_flops = [_flops(quadratic, side) for side in (8, 16, 32)]
    assert q_flops[2] / q_flops[1] > 8, q_flops


def test_saved_memory_grows_linearly() -> None:
    torch.manual_seed(0)
    m = _gated(16, reduction=4)
    saved = [_saved_bytes(m, side) for side in (8, 16, 32)]  # N, 4N, 16N positions
    assert 3.5 < saved[1] / saved[0] < 4.5 and 3.5 < saved[2] / saved[1] < 4.5, saved


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_finite_gradients(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    m = _gated(shape[1], gamma=0.5, heads=2)
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # with one position the normalised weight is 1 (up to eps) whatever q and k are
        if shape[2] * shape[3] > 1:
            assert p.grad.abs().sum() > 0, name


class _MatmulDtypes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm):
            self.dtypes += [a.dtype for a in args if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


def test_autocast_keeps_sums_in_float32() -> None:
    torch.manual_seed(0)
    m = _gated(16, gamma=0.5, reduction=4)
    x = torch.randn(2, 16, 24, 24)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), _MatmulDtypes() as seen:
            y = m(x)
    # the 1x1 convs run in bf16 under autocast, the K^T V and normaliser products do not
    assert seen.dtypes and all(dt == torch.float32 for dt in seen.dtypes), seen.dtypes
    assert y.dtype == torch.float32  # x (float32) + gamma * bf16 branch
    torch.testing.assert_close(y, ref, atol=0.05, rtol=0.05)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(0)
    m = _gated(24, gamma=0.5, heads=3).eval()
    x = torch.randn(2, 24, 7, 5)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)
        torch.testing.assert_close(torch.jit.script(m)(x), ref)


def test_meta_device() -> None:
    m = LinearAttention(16, heads=2).to("meta")
    y = m(torch.empty(2, 16, 5, 7, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 16, 5, 7)


def test_bad_params() -> None:
    with pytest.raises(ValueError, match="reduction must be >= 1, got 0"):
        LinearAttention(8, reduction=0)
    with pytest.raises(ValueError, match="heads must be >= 1, got -2"):
        LinearAttention(8, heads=-2)
    with pytest.raises(ValueError, match=r"^linear_attention: heads must be >= 1, got 0"):
        create_module("linear_attention", 8, heads=0)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        LinearAttention(0)


def test_registry() -> None:
    info = module_info("linear_attention")
    assert info.cls is LinearAttention and info.arxiv == "2006.16236"
    assert info.params == {"reduction": 8, "heads": 1}
    m = create_module("linear_attention", 32, reduction=4, heads=2)
    assert isinstance(m, LinearAttention) and m.query.out_channels == 8 and m.heads == 2
    assert m(torch.randn(1, 32, 3, 3)).shape == (1, 32, 3, 3)
