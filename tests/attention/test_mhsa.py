"""Pre-norm MHSA block (ViT, BoTNet) on a feature map: checked against the textbook formulas, not the module's code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnsearch.attention import mhsa as mhsa_file
from attnsearch.attention.mhsa import MHSA
from attnsearch.attention.registry import create_module, module_info

SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (3, 24, 7, 7), (2, 24, 7, 7), (2, 64, 8, 6)]


def sincos_2d(h: int, w: int, c: int) -> torch.Tensor:
    # the documented layout, written out position by position: for frequency i, omega_i = 10000^(-i / f),
    # channels 4i..4i+3 = sin(row w_i), sin(col w_i), cos(row w_i), cos(col w_i); first c channels kept
    f = math.ceil(c / 4)
    enc = torch.zeros(h * w, 4 * f, dtype=torch.float64)
    for r in range(h):
        for col in range(w):
            for i in range(f):
                om = 10000.0 ** (-i / f)
                enc[r * w + col, 4 * i : 4 * i + 4] = torch.tensor(
                    [math.sin(r * om), math.sin(col * om), math.cos(r * om), math.cos(col * om)]
                )
    return enc[:, :c].float()


def paper_block(m: MHSA, x: torch.Tensor) -> torch.Tensor:
    # ViT pre-norm block, position added to the query/key input:
    # u = LN1(t); q = (u + P) Wq; k = (u + P) Wk; v = u Wv; head_i = softmax(q_i k_i^T / sqrt(d)) v_i
    # t' = t + concat(heads) Wo; out = t' + W2 gelu(W1 LN2(t'))
    b, c, h, w = x.shape
    heads, d = m.heads, c // m.heads
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    u = F.layer_norm(t, (c,), m.norm1.weight, m.norm1.bias, m.norm1.eps)
    p = u + sincos_2d(h, w, c)
    wq, wk = m.qk.weight[:c], m.qk.weight[c:]
    bq, bk = m.qk.bias[:c], m.qk.bias[c:]
    q, k, v = p @ wq.T + bq, p @ wk.T + bk, u @ m.v.weight.T + m.v.bias
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)  # (B, N, N)
        outs.append(a @ v[..., sl])
    t = t + torch.cat(outs, dim=-1) @ m.proj.weight.T + m.proj.bias
    z = F.layer_norm(t, (c,), m.norm2.weight, m.norm2.bias, m.norm2.eps)
    t = t + F.gelu(z @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
    return t.transpose(1, 2).reshape(b, c, h, w)


def _randomise_norms(m: MHSA) -> None:
    # non-trivial LayerNorm affine parameters, so the reference really uses them
    with torch.no_grad():
        for norm in (m.norm1, m.norm2):
            norm.weight.normal_(1.0, 0.2)
            norm.bias.normal_(0.0, 0.2)


@pytest.mark.parametrize("shape", [*SHAPES, (2, 16, 5, 7), (1, 6, 1, 9)])
@pytest.mark.parametrize("heads", [1, 4])
def test_matches_paper(shape: tuple[int, int, int, int], heads: int) -> None:
    torch.manual_seed(0)
    m = MHSA(shape[1], heads=heads)
    _randomise_norms(m)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), paper_block(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("h", "w", "c"), [(3, 5, 8), (4, 4, 6), (2, 3, 1), (2, 3, 2), (2, 3, 3), (7, 1, 64)])
def test_position_encoding_layout(h: int, w: int, c: int) -> None:
    enc = mhsa_file._position_encoding(h, w, c, torch.device("cpu"), torch.float32)
    assert enc.shape == (h * w, c)
    torch.testing.assert_close(enc, sincos_2d(h, w, c), atol=1e-5, rtol=1e-5)


def test_position_encoding_is_not_a_parameter() -> None:
    torch.manual_seed(0)
    m = MHSA(16)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    n_params = sum(p.numel() for p in m.parameters())
    for shape in [(1, 16, 1, 1), (2, 16, 3, 5), (2, 16, 9, 4)]:
        assert m(torch.randn(shape)).shape == shape
    assert list(m.buffers()) == []
    assert sum(p.numel() for p in m.parameters()) == n_params
    assert m.state_dict().keys() == before.keys()
    # the encoding follows H and W: a 3x5 map is encoded differently from a 5x3 one
    enc35 = mhsa_file._position_encoding(3, 5, 16, torch.device("cpu"), torch.float32)
    enc53 = mhsa_file._position_encoding(5, 3, 16, torch.device("cpu"), torch.float32)
    assert not torch.allclose(enc35, enc53)


def test_positions_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    m = MHSA(16, heads=2)
    x = torch.randn(2, 16, 5, 7)
    perm = torch.randperm(35)
    x_perm = x.flatten(2)[:, :, perm].reshape(x.shape)

    def permutation_gap() -> float:
        with torch.no_grad():
            return (m(x_perm).flatten(2) - m(x).flatten(2)[:, :, perm]).abs().max().item()

    assert permutation_gap() > 1e-3  # with the encoding, moving a token changes what it attends to
    monkeypatch.setattr(
        mhsa_file,
        "_position_encoding",
        lambda h, w, c, device, dtype: torch.zeros(h * w, c, device=device, dtype=dtype),
    )
    assert permutation_gap() < 1e-5  # without it, plain attention + MLP are permutation-equivariant


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_when_output_projections_are_zero(shape: tuple[int, int, int, int]) -> None:
    # pre-norm residual: t + f(LN(t)) + g(LN(.)) with f, g ending in zeroed projections is exactly t
    torch.manual_seed(0)
    m = MHSA(shape[1])
    with torch.no_grad():
        for layer in (m.proj, m.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(shape)
    assert torch.equal(m(x), x)


@pytest.mark.parametrize(("channels", "heads", "expected"), [(3, 4, 3), (1, 4, 1), (24, 5, 4), (64, 4, 4), (7, 4, 1)])
def test_effective_heads(channels: int, heads: int, expected: int) -> None:
    assert MHSA(channels, heads=heads).heads == expected  # largest divisor of C not above heads


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_export_and_script() -> None:
    torch.manual_seed(0)
    m = MHSA(24, heads=4).eval()
    x = torch.randn(2, 24, 7, 5)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)
        torch.testing.assert_close(torch.jit.script(m)(x), ref)


def test_meta_device() -> None:
    m = MHSA(16).to("meta")
    y = m(torch.empty(2, 16, 5, 7, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 16, 5, 7)


def test_bad_params() -> None:
    with pytest.raises(ValueError, match="heads must be >= 1, got 0"):
        MHSA(8, heads=0)
    for ratio in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="mlp_ratio must be > 0 and finite"):
            MHSA(8, mlp_ratio=ratio)
    with pytest.raises(ValueError, match=r"^mhsa: mlp_ratio must be > 0 and finite, got 0"):
        create_module("mhsa", 8, mlp_ratio=0)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        MHSA(0)


def test_registry() -> None:
    info = module_info("mhsa")
    assert info.cls is MHSA and info.arxiv == "2010.11929, 2101.11605"
    assert info.params == {"heads": 4, "mlp_ratio": 2.0}
    m = create_module("mhsa", 32, heads=8, mlp_ratio=1.5)
    assert isinstance(m, MHSA) and m.heads == 8 and m.fc1.out_features == 48
    assert m(torch.randn(1, 32, 3, 3)).shape == (1, 32, 3, 3)
