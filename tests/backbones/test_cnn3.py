"""cnn3, the CBAM blog post's three-stage network: layers counted by hand, slots at 28 and 32 px, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import attnsearch as a
from attnsearch.backbones import build_backbone
from attnsearch.search.runner import run_search
from attnsearch.space import parse_space

import tiny  # tests/tiny.py

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_layers_and_parameter_count() -> None:
    model = build_backbone("cnn3", num_classes=10)
    # three stages of (3x3 conv without bias, batch norm with weight and bias), then 256 -> 10
    expected = sum(cin * cout * 9 + 2 * cout for cin, cout in [(3, 64), (64, 128), (128, 256)]) + 256 * 10 + 10
    assert n_params(model) == expected
    assert list(dict(model.features.named_children())) == ["stage1", "stage2", "stage3"]
    conv = model.features.stage2.conv
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (2, 2), (1, 1), None)
    assert [type(m) for m in model.features.stage2] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert sorted(model.state_dict())[:3] == ["classifier.bias", "classifier.weight", "features.stage1.bn.bias"]


@pytest.mark.parametrize(("size", "maps"), [(28, (14, 7, 4)), (32, (16, 8, 4))])
def test_slots_at_mnist_and_cifar_sizes(size: int, maps: tuple[int, int, int]) -> None:
    slots = a.list_slots("cnn3", image_size=size, width=0.25)
    assert [(s.name, s.channels, s.height, s.width, s.block_level) for s in slots] == [
        ("stage1", 16, maps[0], maps[0], True),
        ("stage2", 32, maps[1], maps[1], True),
        ("stage3", 64, maps[2], maps[2], True),
    ]


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize(("slot", "module"), [("stage1", "cbam"), ("stage2", "se"), ("stage3", "cbam")])
def test_every_slot_builds_and_passes_gradients(slot: str, module: str, size: int) -> None:
    plain = a.build_model("cnn3", num_classes=4, width=0.125, image_size=size)
    model = a.build_model("cnn3", {slot: module}, num_classes=4, width=0.125, image_size=size)
    assert n_params(model) > n_params(plain)
    names = list(dict(model.features.named_children()))
    assert names[names.index(slot) + 1] == f"{slot}_attn"
    x = torch.randn(3, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    attn = [p for n, p in model.named_parameters() if "_attn." in n]
    assert attn and all(p.grad is not None for p in attn) and sum(p.grad.abs().sum() for p in attn) > 0


def test_head_and_pooled_protocol() -> None:
    model = a.build_model("cnn3", {"stage2": "cbam"}, num_classes=4, width=0.25, image_size=28).eval()
    assert type(model).HEAD == "classifier"
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert model.pooled(x).shape == (2, 64)
        torch.testing.assert_close(model(x), model.classifier(model.pooled(x)))


def test_no_pretrained_weights_and_no_stem() -> None:
    with pytest.raises(ValueError, match="no pretrained weights exist for cnn3"):
        a.build_model("cnn3", pretrained=True)
    with pytest.raises(ValueError, match="stem 'cifar' applies to ResNet backbones only, not cnn3"):
        a.build_model("cnn3", stem="cifar")


def test_tiny_search_trains_cnn3_with_cbam_after_each_stage(tmp_path: Path) -> None:
    space = parse_space(
        tiny.space(
            name="cnn3_tiny",
            backbone={"name": "cnn3", "width": 0.125},
            slots={"all": ["cbam"]},
            data={"image_size": 28, "train_size": 64, "val_size": 32},
            train={"epochs": 1, "batch_size": 16},
            search={"n_trials": 1},
        )
    )
    run_search(space, results=tmp_path, on_event=None)
    record = json.loads(next((tmp_path / "cnn3_tiny" / "trials").glob("*/trial.json")).read_text())
    assert record["state"] == "complete", record.get("reason")
    assert {p["slot"]: p["module"] for p in record["candidate"]["placements"]} == {
        f"stage{k}": "cbam" for k in (1, 2, 3)
    }
    assert 0 <= record["metrics"]["val_acc"] <= 1
    placed = a.build_model(
        "cnn3", {f"stage{k}": "cbam" for k in (1, 2, 3)}, num_classes=len(record["classes"]), width=0.125, image_size=28
    )
    assert record["metrics"]["params"] == n_params(placed)
