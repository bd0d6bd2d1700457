"""Backbones: torchvision equivalence, slots, insertion, pretrained loading."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torchvision
from torch import nn

import attnsearch as a
from attnsearch.backbones import build_backbone, pretrained_path, backbone_info

VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
DENSENETS = ["densenet121", "densenet161", "densenet169", "densenet201"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_backbone() -> None:
    assert a.list_backbones() == [*VGGS, *DENSENETS, "densenet_bc100", "resnet18", "resnet34", "resnet50", "cnn3"]


def test_issue_parameter_counts() -> None:
    # the figures torchvision documents
    assert n_params(a.build_model("vgg16", num_classes=1000, head="classic")) == 138_357_544
    assert n_params(a.build_model("densenet121", num_classes=1000)) == 7_978_856


@pytest.mark.slow
@pytest.mark.parametrize("name", VGGS + DENSENETS)
def test_plain_backbone_is_torchvision(name: str) -> None:
    ours = build_backbone(name)
    theirs = getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names, same shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_densenet_bc100_matches_the_paper() -> None:
    # DenseNet-BC (L=100, k=12) on CIFAR-10 has 0.8M parameters (Huang et al., table 2)
    model = a.build_model("densenet_bc100", num_classes=10, image_size=32)
    assert 0.75e6 < n_params(model) < 0.8e6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # depth 100 = 3 blocks x 16 layers x 2 convs + stem + 2 transitions + classifier
    assert len(convs) + 1 == 100
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1) and convs[0].out_channels == 24
    slots = {s.name: s for s in a.list_slots("densenet_bc100", image_size=32)}
    assert slots["denseblock1"].channels == 24 + 16 * 12
    assert slots["transition1"].channels == (24 + 16 * 12) // 2
    assert (slots["denseblock3"].height, slots["denseblock3"].width) == (8, 8)
    assert slots["denseblock2_layers"].channels == 12


def test_vgg_slots_and_shapes() -> None:
    slots = a.list_slots("vgg16_bn", image_size=32, width=0.5)
    names = [s.name for s in slots]
    assert names[:5] == ["block1", "block2", "block3", "block4", "block5"]
    assert names[5:] == [f"conv{b}_{i}" for b, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)]
    by_name = {s.name: s for s in slots}
    assert (by_name["block1"].channels, by_name["block1"].height) == (32, 32)
    assert (by_name["block5"].channels, by_name["block5"].height, by_name["block5"].width) == (256, 2, 2)
    assert (by_name["conv3_2"].channels, by_name["conv3_2"].height) == (128, 8)
    assert [s.name for s in slots if s.block_level] == names[:5]
    # the width floor: never fewer than 8 channels
    assert min(s.channels for s in a.list_slots("vgg11", image_size=32, width=0.01)) == 8


def test_slot_shapes_follow_the_input_size() -> None:
    slots = {s.name: s for s in a.list_slots("densenet121", image_size=224)}
    assert (slots["denseblock1"].height, slots["denseblock4"].height) == (56, 7)
    assert slots["denseblock4"].channels == 1024
    assert slots["denseblock3_layers"].channels == 32
    non_square = a.build_model("vgg11", {"block5": "se"}, num_classes=3, width=0.125, head="compact")
    assert non_square(torch.randn(1, 3, 48, 80)).shape == (1, 3)


def test_too_small_image_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="image_size 16 is too small"):
        a.list_slots("vgg16", image_size=16)


def _all_slot_cases() -> list[tuple[str, str]]:
    return [(b, s.name) for b in a.list_backbones() for s in a.list_slots(b, image_size=32, width=0.125)]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "slot"), _all_slot_cases())
def test_every_backbone_slot_builds_and_trains(backbone: str, slot: str) -> None:
    plain = a.build_model(backbone, num_classes=5, width=0.125, head="compact", image_size=32)
    model = a.build_model(backbone, {slot: "se"}, num_classes=5, width=0.125, head="compact", image_size=32)
    assert n_params(model) > n_params(plain)  # the module really went in
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    attn = [p for n, p in model.named_parameters() if ".attn." in n or "_attn." in n]
    assert attn and all(p.grad is not None for p in attn)


def test_inserted_modules_are_named_after_their_slot() -> None:
    model = a.build_model(
        "vgg16_bn",
        {"block3": "cbam", "conv5_3": "eca", "block5": {"type": "self_attention", "downsample": True}},
        num_classes=10,
        width=0.25,
        head="compact",
        image_size=32,
    )
    names = list(dict(model.features.named_children()))
    assert names[names.index("block3_attn") - 1] == "22"  # after the ReLU of conv3_3, before pool3
    assert names[names.index("block3_attn") + 1] == "23"
    assert isinstance(model.features.get_submodule("23"), nn.MaxPool2d)  # names kept, not positions
    # conv5_3 and block5 share a point: the finer slot first
    assert names.index("conv5_3_attn") + 1 == names.index("block5_attn")
    assert type(model.features.block5_attn).__name__ == "SelfAttention"
    assert model.features.block5_attn.downsample is True


def test_layer_slot_puts_one_module_in_every_layer() -> None:
    model = a.build_model("densenet_bc100", {"denseblock2_layers": "se"}, num_classes=10, width=0.5, image_size=32)
    block2 = model.features.denseblock2
    assert all(type(layer.attn).__name__ == "SqueezeExcite" for layer in block2.values())
    assert len({id(layer.attn) for layer in block2.values()}) == 16  # sixteen modules, not one shared
    assert all(isinstance(layer.attn, nn.Identity) for layer in model.features.denseblock1.values())


def test_placements_accept_none_and_validate() -> None:
    plain = a.build_model("vgg11", num_classes=2, width=0.125, head="compact", image_size=32)
    same = a.build_model(
        "vgg11", {"block1": "none", "block2": None}, num_classes=2, width=0.125, head="compact", image_size=32
    )
    assert n_params(plain) == n_params(same)
    with pytest.raises(
        ValueError, match=r"unknown slot 'block7' for vgg16_bn; valid: block1\.\.block5, conv1_1\.\.conv5_3"
    ):
        a.build_model("vgg16_bn", {"block7": "se"})
    with pytest.raises(ValueError, match="unknown attention module 'sse'; valid: none, se, eca"):
        a.build_model("vgg16_bn", {"block1": "sse"})
    with pytest.raises(ValueError, match="se: unknown parameter 'ratio'; valid: reduction"):
        a.build_model("vgg16_bn", {"block1": {"type": "se", "ratio": 4}})
    with pytest.raises(ValueError, match="needs a 'type' key"):
        a.build_model("vgg16_bn", {"block1": {"reduction": 4}})
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'; valid: vgg11"):
        a.build_model("resnet101")
    with pytest.raises(ValueError, match="unknown head 'big'; valid: classic, compact"):
        a.build_model("vgg11", head="big")
    with pytest.raises(ValueError, match="width must be"):
        a.build_model("vgg11", width=0)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_pretrained_offline_names_the_file(torch_home) -> None:
    with pytest.raises(ValueError, match=r"place vgg16_bn-6c64b313\.pth in .*hub/checkpoints"):
        a.build_model("vgg16_bn", pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights exist for densenet_bc100"):
        a.build_model("densenet_bc100", pretrained=True)
    with pytest.raises(ValueError, match=r"width 1\.0 only"):
        a.build_model("vgg16_bn", width=0.5, pretrained=True)


def test_pretrained_densenet_loads_torchvision_checkpoint(torch_home) -> None:
    reference = torchvision.models.densenet121()
    # torchvision's published checkpoints use the old 'norm.1' layer names and no BatchNorm counters
    old_names = {
        re.sub(r"(denselayer\d+\.(norm|conv))([12])\.", r"\1.\3.", k): v
        for k, v in reference.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_names
    path = pretrained_path(backbone_info("densenet121"))
    os.makedirs(os.path.dirname(path))
    torch.save(old_names, path)
    model = a.build_model("densenet121", {"denseblock2": "se"}, num_classes=1000, pretrained=True)
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # a different head keeps its own initialisation; the features still load
    small = a.build_model("densenet121", num_classes=10, pretrained=True)
    assert torch.equal(small.features.conv0.weight, reference.features.conv0.weight)


def test_pretrained_rejects_a_pickle_that_runs_code(torch_home) -> None:
    path = pretrained_path(backbone_info("vgg11"))
    os.makedirs(os.path.dirname(path))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {torch_home}/pwned",))

    torch.save({"features.0.weight": Evil()}, path)
    with pytest.raises(ValueError, match="cannot read pretrained weights"):
        a.build_model("vgg11", pretrained=True)
    assert not (torch_home / "pwned").exists()


def test_memory_efficient_densenet_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = a.build_model("densenet_bc100", {"denseblock1_layers": "eca"}, num_classes=3, width=0.34, image_size=32)
    efficient = a.build_model(
        "densenet_bc100", {"denseblock1_layers": "eca"}, num_classes=3, width=0.34, image_size=32, memory_efficient=True
    )
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain(x).sum().backward()
    efficient(x).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    with pytest.raises(ValueError, match="DenseNet backbones only"):
        a.build_model("vgg11", memory_efficient=True)
