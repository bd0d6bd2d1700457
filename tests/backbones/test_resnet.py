"""ResNet backbones: torchvision equivalence, both stems, every slot, the residual-branch placement, pretrained."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

import attnsearch as a
from attnsearch.backbones import backbone_info, build_backbone, pretrained_path
from attnsearch.backbones.resnet import BasicBlock, Bottleneck
from attnsearch.cli import main
from attnsearch.search.runner import run_search
from attnsearch.search.survey import survey_space
from attnsearch.space import SpaceError, parse_space

import tiny  # tests/tiny.py

pytestmark = pytest.mark.usefixtures("one_thread")

SLOTS = [f"layer{k}" for k in range(1, 5)] + [f"layer{k}_blocks" for k in range(1, 5)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name: str = "resnet18", placements: dict | None = None, **kwargs) -> nn.Module:
    settings = {"num_classes": 5, "width": 0.125, "image_size": 32, "stem": "cifar", **kwargs}
    return a.build_model(name, placements, **settings)


@pytest.mark.parametrize(("name", "count"), [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_plain_resnet_is_torchvision(name: str, count: int) -> None:
    ours = build_backbone(name)
    theirs = getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(theirs) == count  # the figures torchvision documents
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names, same shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=0)


def test_resnet34_has_torchvision_names() -> None:
    with torch.device("meta"):
        ours, theirs = build_backbone("resnet34"), torchvision.models.resnet34()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_slots_with_the_imagenet_stem_at_224() -> None:
    slots = {s.name: (s.channels, s.height, s.width, s.block_level) for s in a.list_slots("resnet18", image_size=224)}
    assert list(slots) == SLOTS
    assert slots["layer1"] == (64, 56, 56, True) and slots["layer2"] == (128, 28, 28, True)
    assert slots["layer3"] == (256, 14, 14, True) and slots["layer4"] == (512, 7, 7, True)
    assert slots["layer2_blocks"] == (128, 28, 28, False) and slots["layer4_blocks"] == (512, 7, 7, False)
    # Bottleneck: a block's output has 4x the planes, and so has the module inside it
    fifty = {s.name: s for s in a.list_slots("resnet50", image_size=224)}
    assert (fifty["layer1"].channels, fifty["layer1_blocks"].channels, fifty["layer4_blocks"].channels) == (
        256,
        256,
        2048,
    )


def test_cifar_stem_keeps_the_resolution() -> None:
    slots = {s.name: (s.channels, s.height) for s in a.list_slots("resnet18", image_size=32, stem="cifar")}
    assert slots["layer1"] == (64, 32) and slots["layer2"] == (128, 16) and slots["layer4"] == (512, 4)
    model = build_backbone("resnet18", stem="cifar")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    # only the first conv differs: 64 x 3 x (7x7 - 3x3) weights fewer
    assert n_params(build_backbone("resnet18")) - n_params(model) == 64 * 3 * (49 - 9)
    # width: every stage scaled, never under 8 channels
    thin = [s.channels for s in a.list_slots("resnet50", image_size=32, width=0.01, stem="cifar")][:4]
    assert thin == [32, 32, 32, 32]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("slot", SLOTS)
def test_every_slot_builds_and_passes_gradients(name: str, slot: str) -> None:
    plain = small(name)
    model = small(name, {slot: "cbam" if slot.endswith("blocks") else "se"})
    assert n_params(model) > n_params(plain)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    attn = [(n, p) for n, p in model.named_parameters() if ".attn." in n or "_attn." in n]
    assert attn and all(p.grad is not None for _, p in attn)
    assert sum(p.grad.abs().sum() for _, p in attn) > 0  # (a tiny SE's 2 hidden units may all sit below ReLU's 0)
    # every name of the plain model is still there: a backbone state_dict loads into the placed model
    assert set(plain.state_dict()) < set(model.state_dict())


def test_a_stage_slot_and_its_blocks_slot_together() -> None:
    model = small("resnet18", {"layer2": "cbam", "layer2_blocks": "se"})
    assert list(dict(model.layer2.named_children())) == ["0", "1", "layer2_attn"]
    assert type(model.layer2.layer2_attn).__name__ == "CBAM" and model.layer2.layer2_attn.channels == 16
    blocks = [model.layer2[0], model.layer2[1]]
    assert all(type(b.attn).__name__ == "SqueezeExcite" and b.attn.channels == 16 for b in blocks)
    assert blocks[0].attn is not blocks[1].attn
    assert not hasattr(model.layer2.layer2_attn, "attn")
    assert all(isinstance(b.attn, nn.Identity) for b in model.layer3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_block_module_sits_on_the_branch_before_the_addition(block: type[nn.Module]) -> None:
    torch.manual_seed(0)
    down = nn.Sequential(
        nn.Conv2d(8, 4 * block.expansion, 1, stride=2, bias=False), nn.BatchNorm2d(4 * block.expansion)
    )
    b = block(8, 4, 2, down).eval()
    x = torch.randn(2, 8, 6, 6)
    seen: dict[str, torch.Tensor] = {}
    last_bn = b.bn3 if block is Bottleneck else b.bn2
    last_bn.register_forward_hook(lambda _m, _i, out: seen.update(bn=out.clone()))
    b.attn = _Zero()
    b.attn.register_forward_hook(lambda _m, inputs, _o: seen.update(attn=inputs[0].clone()))
    with torch.no_grad():
        out = b(x)
        # a branch scaled to zero leaves relu(shortcut): the module acts before the addition, on the branch only
        torch.testing.assert_close(out, torch.relu(down(x)))
    torch.testing.assert_close(seen["attn"], seen["bn"])  # its input is the branch's last batch norm's output


def test_head_and_pooled_protocol() -> None:
    for model in (small("resnet18", {"layer3_blocks": "cbam", "layer4": "se"}), build_backbone("resnet50")):
        model.eval()
        assert type(model).HEAD == "fc"
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            pooled = model.pooled(x)
            assert pooled.shape == (2, model.fc.in_features)
            torch.testing.assert_close(model(x), getattr(model, model.HEAD)(pooled))


def test_stem_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="stem 'cifar' applies to ResNet backbones only, not vgg11"):
        a.build_model("vgg11", stem="cifar")
    with pytest.raises(ValueError, match="unknown stem 'tiny'; valid: imagenet, cifar"):
        a.list_slots("resnet18", stem="tiny")
    with pytest.raises(SpaceError, match=r"backbone\.stem: 'cifar' applies to ResNet backbones only, not vgg11_bn"):
        parse_space(tiny.space(backbone={"stem": "cifar"}))
    with pytest.raises(ValueError, match="imagenet stem only"):
        a.build_model("resnet18", stem="cifar", pretrained=True)


def test_slots_command_takes_the_stem() -> None:
    done = CliRunner().invoke(main, ["slots", "resnet18", "--image-size", "32", "--stem", "cifar", "--json"])
    assert done.exit_code == 0, done.output
    found = {s["name"]: (s["channels"], s["height"]) for s in json.loads(done.output)}
    assert found["layer1"] == (64, 32) and found["layer4_blocks"] == (512, 4)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_pretrained_resnet_loads_torchvision_checkpoint(torch_home: Path) -> None:
    reference = torchvision.models.resnet18()
    path = pretrained_path(backbone_info("resnet18"))
    assert os.path.basename(path) == os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)
    model = a.build_model("resnet18", {"layer3_blocks": "se"}, num_classes=1000, pretrained=True)
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # a different head keeps its own initialisation; everything before it still loads
    ten = a.build_model("resnet18", num_classes=10, pretrained=True)
    assert torch.equal(ten.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # a file without a layer the backbone has is refused, naming it
    state = reference.state_dict()
    del state["layer2.0.downsample.0.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"does not fit resnet18: 1 tensors .*layer2\.0\.downsample\.0\.weight"):
        a.build_model("resnet18", pretrained=True)


def test_tiny_search_trains_a_resnet_with_cbam_in_its_blocks(tmp_path: Path) -> None:
    space = parse_space(
        tiny.space(
            name="resnet_tiny",
            backbone={"name": "resnet18", "width": 0.125, "stem": "cifar"},
            slots={"layer2_blocks": ["cbam"], "layer4": ["se"]},
            data={"train_size": 64, "val_size": 32},
            train={"epochs": 1, "batch_size": 16},
            search={"n_trials": 1},
        )
    )
    run_search(space, results=tmp_path, on_event=None)
    record = json.loads(next((tmp_path / "resnet_tiny" / "trials").glob("*/trial.json")).read_text())
    assert record["state"] == "complete", record.get("reason")
    assert record["candidate"]["backbone"]["stem"] == "cifar"
    assert {p["slot"]: p["module"] for p in record["candidate"]["placements"]} == {
        "layer2_blocks": "cbam",
        "layer4": "se",
    }
    assert 0 <= record["metrics"]["val_acc"] <= 1
    # the trained model is the one build_model makes of this candidate, stem included
    placed = small("resnet18", {"layer2_blocks": "cbam", "layer4": "se"}, num_classes=len(record["classes"]))
    assert record["metrics"]["params"] == n_params(placed)


def test_attention_gates_read_a_resnet_and_cnn3_through_head_and_pooled() -> None:
    for model in (
        small("resnet18", {"layer2": "gate", "layer3_blocks": "cbam"}),
        a.build_model("cnn3", {"stage1": "gate", "stage2": "cbam"}, num_classes=5, width=0.125, image_size=32),
    ):
        x = torch.randn(2, 3, 32, 32)
        out = model(x)
        assert out.shape == (2, 5)
        out.sum().backward()
        gates = [p for n, p in model.named_parameters() if n.startswith("gates.")]
        assert gates and all(p.grad is not None for p in gates)


def test_survey_costs_follow_the_stem() -> None:
    costs = {}
    for stem in ("imagenet", "cifar"):
        backbone = {"name": "resnet18", "width": 0.125, "stem": stem}
        costs[stem] = survey_space(parse_space(tiny.space(backbone=backbone, slots={"layer1": ["none", "se"]})))
    assert costs["cifar"].params[1] == n_params(small("resnet18", {"layer1": "se"}, num_classes=10))
    # the CIFAR stem keeps 4x the side (16x the positions) into layer1: every stage's convs cost about 16x
    assert costs["cifar"].flops[0] > 10 * costs["imagenet"].flops[0]


def test_a_built_model_keeps_each_stage_slot_at_the_last_block() -> None:
    # a placed stage module must not move the slot's map after itself (explain's Grad-CAM and the gate read it)
    model = a.build_model("resnet18", {"layer4": "cbam", "layer3": "se"}, num_classes=10, width=0.125, image_size=32)
    probes = {site.name: site.probe for site in model.slot_sites() if site.block_level}
    assert probes == {"layer1": "layer1.1", "layer2": "layer2.1", "layer3": "layer3.1", "layer4": "layer4.1"}
