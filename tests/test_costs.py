"""measure_costs against hand-computed figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnsearch as a
from attnsearch.costs import count_flops


def conv_linear_flops(model: nn.Module, image_size: int) -> int:
    """2 x multiply-adds of every conv and linear layer, from their output shapes."""
    total = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * k * output.numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return total


def test_vgg16_flops_and_params() -> None:
    model = a.build_model("vgg16", num_classes=1000, head="classic")
    costs = a.measure_costs(model, image_size=224)
    assert costs["params"] == 138_357_544
    assert costs["flops"] == pytest.approx(30.94e9, rel=1e-3)
    assert costs["flops"] == conv_linear_flops(model, 224)
    assert set(costs) == {"params", "flops"}  # no timing unless asked


@pytest.mark.parametrize(("backbone", "slot"), [("vgg11_bn", "block3"), ("densenet121", "denseblock2_layers")])
def test_batch_norm_models_count_their_convolutions_and_are_left_as_they_were(backbone: str, slot: str) -> None:
    torch.manual_seed(0)
    model = a.build_model(backbone, {slot: "se"}, num_classes=10, width=0.25, head="compact", image_size=32)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        before = model(x)
    # batch norm adds no FLOPs to the count: the convolutions and linear layers (SE's included) are all of it
    assert count_flops(model, (1, 3, 32, 32)) == conv_linear_flops(model, 32)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all("forward" not in vars(m) for m in norms)  # the class's forward again
    assert not model.training  # the mode it was in
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_attention_matmuls_are_counted() -> None:
    c, h, w, r = 64, 8, 6, 8
    n = h * w
    projections = 2 * c * (c // r) * n * 2 + 2 * c * c * n  # query, key (C -> C/8) and value (C -> C), 1x1 convs
    attention = 2 * n * n * (c // r) + 2 * n * n * c  # logits q.k over all pairs, then weights x values
    assert count_flops(a.create_module("self_attention", c, reduction=r), (1, c, h, w)) == projections + attention
    # a transformer block: q, k, v and output projections, the MLP, and the two attention matmuls
    heads, d = 4, c // 4
    mlp = 2 * n * c * 2 * c * 2
    expected = 2 * n * c * c * 4 + mlp + heads * (2 * n * n * d) * 2
    assert count_flops(a.create_module("mhsa", c, heads=heads), (1, c, h, w)) == expected


def test_latency_and_memory_on_request() -> None:
    model = a.build_model("vgg11_bn", {"block3": "cbam"}, num_classes=10, width=0.125, head="compact", image_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = a.measure_costs(model, image_size=32, latency=True, memory=True, batch_size=4, repeats=3)
    large = a.measure_costs(model, image_size=32, memory=True, batch_size=16)
    assert small["latency_ms"] > 0 and small["latency_ms_batch"] > 0 and small["latency_batch_size"] == 4
    # activations grow with the batch: four times the images, about four times the memory
    assert 3.0 < large["train_memory_bytes"] / small["train_memory_bytes"] < 4.5
    # measuring is not training: weights and BatchNorm statistics are unchanged, no gradients left behind
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_self_attention_on_a_large_map_is_costed_not_crashed() -> None:
    # conv1_1 at 224x224: 50,176 positions; the N x N attention matrix alone would be 10 GB in fp32
    model = a.build_model("vgg11", {"conv1_1": "self_attention"}, num_classes=10, width=0.125, head="compact")
    flops = a.measure_costs(model, image_size=224)["flops"]
    n = 224 * 224
    assert flops > 2 * n * n * 8  # the quadratic term is there
