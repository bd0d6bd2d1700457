"""Attention gates in a model: placement rules, the classifier's aggregation, names, costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnsearch as a
from attnsearch.costs import count_flops, count_params
from attnsearch.errors import AttnsearchError
from attnsearch.search.worker import share_backbone
from attnsearch.space import SpaceError, parse_space

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"num_classes": 5, "width": 0.125, "image_size": 32}


def vgg(placements: dict | None = None, head: str = "compact") -> nn.Module:
    return a.build_model("vgg11_bn", placements, head=head, **TINY)


def maps_by_hand(model: nn.Module, x: torch.Tensor, indices: dict[str, int]) -> tuple[torch.Tensor, dict]:
    """VGG's pooled features and the maps after the ``features`` children named by ``indices`` (slot -> index),
    walking the feature stack one layer at a time."""
    found = {}
    h = x
    for i, layer in enumerate(model.features):
        h = layer(h)
        found.update({slot: h for slot, index in indices.items() if index == i})
    return torch.flatten(model.avgpool(h), 1), found


# vgg11_bn's features: block3 ends at the ReLU at index 13, block4 at 20, block5 at 27
BLOCKS = {"block3": 13, "block4": 20, "block5": 27}


@pytest.mark.parametrize("slot", ["block1", "block2", "block3", "block4", "conv3_1", "conv5_1"])
def test_gate_in_every_vgg_block_slot_shapes_and_gradients(slot: str) -> None:
    torch.manual_seed(0)
    model = vgg({slot: "gate"})
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        if name.startswith(("gates.", "gate_heads.")) and not name.endswith("psi.bias"):  # psi.bias: before a BN
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.features[0].weight.grad.abs().sum() > 0
    alpha = model.gate_maps(x)[slot]
    height = {s.name: s.height for s in a.list_slots("vgg11_bn", image_size=32, width=0.125)}[slot]
    assert alpha.shape == (4, height, height) and ((alpha >= 0) & (alpha <= 1)).all()


def test_gate_in_densenet_slots() -> None:
    torch.manual_seed(0)
    model = a.build_model("densenet_bc100", {"denseblock2": "gate", "transition1": "gate"}, **TINY)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert model.gates["denseblock2"].theta.weight.grad.abs().sum() > 0
    assert model.gates["denseblock2"].stride == 2 and model.gates["transition1"].stride == 2  # 16 -> 8, 16 -> 8
    assert {k: tuple(v.shape) for k, v in model.gate_maps(x).items()} == {
        "denseblock2": (2, 16, 16),
        "transition1": (2, 16, 16),
    }


def test_concat_is_one_linear_over_backbone_and_gated_features() -> None:
    torch.manual_seed(1)
    model = vgg({"block3": "gate", "block4": {"type": "gate", "gating_slot": "block5"}}).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f, maps = maps_by_hand(model, x, BLOCKS)
        g3 = model.gates["block3"](maps["block3"], maps["block5"])
        g4 = model.gates["block4"](maps["block4"], maps["block5"])
        head = model.classifier
        one = nn.Linear(f.shape[1] + g3.shape[1] + g4.shape[1], 5)
        one.weight.copy_(
            torch.cat([head.weight, model.gate_heads["block3"].weight, model.gate_heads["block4"].weight], 1)
        )
        one.bias.copy_(head.bias)
        torch.testing.assert_close(model(x), one(torch.cat([f, g3, g4], dim=1)))


def test_concat_with_the_classic_head_joins_its_first_linear() -> None:
    torch.manual_seed(2)
    model = vgg({"block3": "gate"}, head="classic").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f, maps = maps_by_hand(model, x, BLOCKS)
        g3 = model.gates["block3"](maps["block3"], maps["block5"])
        first = model.classifier[0]
        one = nn.Linear(f.shape[1] + g3.shape[1], first.out_features)
        one.weight.copy_(torch.cat([first.weight, model.gate_heads["block3"].weight], 1))
        one.bias.copy_(first.bias)
        torch.testing.assert_close(model(x), model.classifier[1:](one(torch.cat([f, g3], dim=1))))


def test_mean_averages_the_separate_heads() -> None:
    torch.manual_seed(3)
    params = {"type": "gate", "aggregation": "mean"}
    model = vgg({"block3": params, "block4": params}).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f, maps = maps_by_hand(model, x, BLOCKS)
        heads = model.gate_heads
        logits = [
            model.classifier(f),
            heads["block3"](model.gates["block3"](maps["block3"], maps["block5"])),
            heads["block4"](model.gates["block4"](maps["block4"], maps["block5"])),
        ]
        torch.testing.assert_close(model(x), (logits[0] + logits[1] + logits[2]) / 3)
    assert heads["block3"].bias is not None and heads["block3"].out_features == 5


def test_backbone_names_shared_with_a_plain_model_and_costs_count_the_gate() -> None:
    plain, gated = vgg(), vgg({"block3": "gate"})
    assert len(share_backbone(gated, plain)) == len(plain.state_dict())
    assert torch.equal(gated.features[4].weight, plain.features[4].weight)
    extra = set(gated.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith(("gates.block3.", "gate_heads.block3.")) for k in extra)
    # block3 of vgg11_bn at width 1/8: 32 channels at 8x8, block5 64 at 2x2: W_x 4x4 stride 4, F_int 16
    by_hand = 32 * 16 * 16 + (64 * 16 + 16) + (16 + 1) + 2 + 32 * 5
    assert count_params(gated) - count_params(plain) == by_hand
    # the gate's convolutions and its head, 2 FLOPs per multiply-add: W_x at 2x2, W_g at 2x2, psi at 2x2, head
    flops = 2 * (32 * 16 * 16 * 4 + 64 * 16 * 4 + 16 * 4 + 32 * 5)
    assert count_flops(gated, (1, 3, 32, 32)) - count_flops(plain, (1, 3, 32, 32)) == flops


@pytest.mark.parametrize(
    ("placements", "message"),
    [
        ({"block4": {"type": "gate", "gating_slot": "block3"}}, "block4: .*gating_slot block3 comes before block4"),
        ({"block5": "gate"}, "block5: .*gating_slot block5 \\(the default: the last block\\) sees the same map"),
        ({"conv5_1": {"type": "gate", "gating_slot": "block5"}}, None),
        ({"block3": {"type": "gate", "gating_slot": "nowhere"}}, "unknown slot 'nowhere' for vgg11_bn"),
        ({"block3": "gate", "block4": {"type": "gate", "aggregation": "mean"}}, "every gate of a model shares one"),
    ],
)
def test_build_refuses_a_gate_where_it_cannot_go(placements: dict, message: str | None) -> None:
    if message is None:
        assert vgg(placements)(torch.randn(1, 3, 32, 32)).shape == (1, 5)  # a later map at the same size: fine
        return
    with pytest.raises(AttnsearchError, match=message):
        vgg(placements)


def test_build_refuses_a_gate_in_a_per_layer_slot() -> None:
    with pytest.raises(AttnsearchError, match="per-layer slot denseblock2_layers"):
        a.build_model("densenet_bc100", {"denseblock2_layers": "gate"}, **TINY)


SPACE = {"name": "g", "backbone": {"name": "vgg11_bn", "width": 0.125}, "data": {"dataset": "shapes"}}


def test_space_validation_names_both_slots() -> None:
    space = {**SPACE, "slots": {"block4": ["none", "gate"]}, "modules": {"gate": {"gating_slot": "block3"}}}
    with pytest.raises(SpaceError, match=r"^slots.block4: .*gating_slot block3 comes before block4$"):
        parse_space(space, check_data=False)
    space = {**SPACE, "slots": {"block3": ["gate"]}, "modules": {"gate": {"gating_slot": "block9"}}}
    with pytest.raises(SpaceError, match=r"^modules.gate.gating_slot: unknown slot 'block9'"):
        parse_space(space, check_data=False)
    space = {
        **SPACE,
        "slots": {"block3": ["gate"], "block4": ["gate"]},
        "modules": {"gate": {"aggregation": ["concat", "mean"]}},
    }
    with pytest.raises(SpaceError, match=r"^modules.gate.aggregation: give one value"):
        parse_space(space, check_data=False)
    dense = {**SPACE, "backbone": {"name": "densenet_bc100", "width": 0.125}, "slots": {"denseblock1_layers": ["gate"]}}
    with pytest.raises(SpaceError, match=r"^slots.denseblock1_layers: a gate cannot go in the per-layer slot"):
        parse_space(dense, check_data=False)


def test_all_offers_the_gate_only_before_the_gating_slot() -> None:
    space = parse_space({**SPACE, "slots": {"all": ["none", "gate"]}, "modules": {"gate": {"gating_slot": "block4"}}})
    assert space.slots["vgg11_bn"] == {
        "block1": ["none", "gate"],
        "block2": ["none", "gate"],
        "block3": ["none", "gate"],
        "block4": ["none"],
        "block5": ["none"],
    }
    for params in space.grid():  # every candidate builds
        candidate = space.suggest(_Fixed(params))
        b = candidate.backbone
        model = a.build_model(
            b.name,
            candidate.placement_dict(),
            num_classes=2,
            width=b.width,
            head=b.head,
            image_size=candidate.data.image_size,
        )
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


class _Fixed:
    """An Optuna trial that answers from a dict of parameters."""

    def __init__(self, params: dict) -> None:
        self.params = params

    def suggest_categorical(self, name: str, choices: list) -> object:
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.params[name]


def test_gates_on_the_residual_backbones_and_cnn3() -> None:
    torch.manual_seed(4)
    placements = {"layer2": "gate", "layer3": {"type": "gate", "aggregation": "concat"}, "layer4": "cbam"}
    resnet = a.build_model("resnet18", placements, stem="cifar", **TINY)
    # the gating map is stage 4's last block's output, before the CBAM placed at layer4
    assert resnet.probes == {"layer2": "layer2.1", "layer3": "layer3.1", "layer4": "layer4.1"}
    assert {slot: gate.stride for slot, gate in resnet.gates.items()} == {"layer2": 4, "layer3": 2}
    x = torch.randn(2, 3, 32, 32)
    resnet(x).sum().backward()
    assert resnet.gates["layer2"].theta.weight.grad.abs().sum() > 0 and resnet.fc.weight.grad.abs().sum() > 0
    plain = a.build_model("resnet18", {"layer4": "cbam"}, stem="cifar", **TINY)
    assert len(share_backbone(resnet, plain)) == len(plain.state_dict())
    cnn = a.build_model("cnn3", {"stage1": {"type": "gate", "aggregation": "mean"}}, **TINY)
    assert cnn(x).shape == (2, 5) and cnn.gate_maps(x)["stage1"].shape == (2, 16, 16)
    with pytest.raises(AttnsearchError, match="per-layer slot layer2_blocks"):
        a.build_model("resnet18", {"layer2_blocks": "gate"}, stem="cifar", **TINY)
