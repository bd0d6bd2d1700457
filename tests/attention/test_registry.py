"""Every registered module against the shared contract; the registry's own errors."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

import attnsearch as a
from attnsearch.attention import module_info

KEYS = a.list_modules()
# modules that map a feature map to one of its shape; the attention gate reads two maps and pools (tests/attention/
# test_gate.py, tests/test_gating.py)
SAME_SHAPE = [key for key in KEYS if key != "gate"]
SHAPES = [(1, 1, 1, 1), (2, 3, 3, 5), (1, 24, 7, 7), (4, 24, 1, 6), (3, 64, 8, 6)]


def test_registry_keys_are_the_issue_table() -> None:
    expected = ["none", "se", "eca", "cbam", "triplet", "coord", "self_attention", "linear_attention", "mhsa", "gate"]
    assert expected == KEYS


def _switch_on(module: torch.nn.Module) -> torch.nn.Module:
    # residual blocks start as the identity (gamma = 0): open them so the attention path is exercised
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return module


@pytest.mark.parametrize("key", SAME_SHAPE)
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_finite_and_gradients(key: str, shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    module = _switch_on(a.create_module(key, shape[1]))
    x = torch.randn(shape, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # every parameter takes part, checked from 24 channels on: at 1 or 3 channels a one-unit ReLU bottleneck can
        # be dead, and at one position a softmax is 1 and a BatchNorm sees equal values, whatever the input
        if shape[1] > 3:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("key", SAME_SHAPE)
def test_bfloat16(key: str) -> None:
    torch.manual_seed(0)
    module = _switch_on(a.create_module(key, 24)).eval()
    x = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        reference = module(x)
        y = module.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("key", KEYS)
def test_each_file_opens_with_its_paper(key: str) -> None:
    info = module_info(key)
    if key == "none":
        return
    source = inspect.getsource(inspect.getmodule(info.cls))
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and all(arxiv in docstring for arxiv in info.arxiv.split(", "))
    assert "blog" in docstring.lower()  # where the blog-post versions differ, and what we do


def test_registry_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown attention module 'SE'; valid: none, se, eca, cbam"):
        a.create_module("SE", 8)
    with pytest.raises(ValueError, match="cbam: unknown parameter 'k'; valid: reduction, kernel_size"):
        a.create_module("cbam", 8, k=3)
    with pytest.raises(ValueError, match="self_attention: downsample must be bool, got 1"):
        a.create_module("self_attention", 8, downsample=1)
    with pytest.raises(ValueError, match="se: reduction must be int, got True"):
        a.create_module("se", 8, reduction=True)
    with pytest.raises(ValueError, match="eca: kernel_size must be int or null"):
        a.create_module("eca", 8, kernel_size=3.0)
    with pytest.raises(ValueError, match="cbam: kernel_size"):
        a.create_module("cbam", 8, kernel_size=5)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        a.create_module("se", 0)
    assert isinstance(a.create_module("mhsa", 8, mlp_ratio=3), torch.nn.Module)  # an int is a fine float
    with pytest.raises(ValueError, match="registered twice"):
        a.register_module("se", paper="x")(type("Dup", (torch.nn.Module,), {}))
