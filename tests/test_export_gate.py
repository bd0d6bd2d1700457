"""Exported attention-gated models: run where attnsearch cannot be imported, with the trained state_dict, equal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from attnsearch.errors import AttnsearchError
from attnsearch.export import generate_code
from tests.standalone import run_standalone, save_case

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DATA = DataSpec(image_size=32)

CASES = {
    # two gated slots, concat, beside an SE module that sits in the feature stack
    "vgg_concat": Candidate(
        BackboneSpec("vgg11_bn", 0.125, "compact"),
        (
            PlacementSpec("block3", "gate", (("inter_channels", 0.25),)),
            PlacementSpec("block4", "gate", (("gating_slot", "block5"),)),
            PlacementSpec("block5", "se", (("reduction", 4),)),
        ),
        data=DATA,
    ),
    # the classic head: gated features join its first Linear
    "vgg_classic": Candidate(
        BackboneSpec("vgg11", 0.125, "classic"), (PlacementSpec("block2", "gate", ()),), data=DATA
    ),
    "densenet_mean": Candidate(
        BackboneSpec("densenet_bc100", 0.125),
        (
            PlacementSpec("denseblock1", "gate", (("aggregation", "mean"),)),
            PlacementSpec("transition2", "gate", (("aggregation", "mean"), ("gating_slot", "denseblock3"))),
        ),
        data=DATA,
    ),
    # ResNet-18 (CIFAR stem): gates at two stages; the gating stage holds a CBAM, which the gates do not see
    "resnet_concat": Candidate(
        BackboneSpec("resnet18", 0.125, stem="cifar"),
        (
            PlacementSpec("layer2", "gate", ()),
            PlacementSpec("layer3", "gate", (("inter_channels", 1.0),)),
            PlacementSpec("layer4", "cbam", (("reduction", 4),)),
        ),
        data=DATA,
    ),
    "cnn3_mean": Candidate(
        BackboneSpec("cnn3", 0.125), (PlacementSpec("stage1", "gate", (("aggregation", "mean"),)),), data=DATA
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exported_gates")
    torch.manual_seed(0)
    for name, candidate in CASES.items():
        save_case(folder, name, candidate)
    return folder


def test_gated_models_run_without_attnsearch_with_equal_outputs(exported: Path) -> None:
    found = run_standalone(exported, list(CASES))
    for name in CASES:
        assert found[name]["diff"] <= 1e-5, (name, found[name])
    classes = {name: found[name]["class"] for name in CASES}
    assert classes == {
        "vgg_concat": "GatedVGG",
        "vgg_classic": "GatedVGG",
        "densenet_mean": "GatedDenseNet",
        "resnet_concat": "GatedResNet",
        "cnn3_mean": "GatedCNN3",
    }


def test_gated_code_reads_like_a_model_file(exported: Path) -> None:
    paths = sorted(str(p) for p in exported.glob("*.py"))
    for config in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", *config, *paths], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout
    code = (exported / "vgg_concat.py").read_text()
    assert "class AttentionGate(nn.Module):" in code and "class GatedVGG(VGG):" in code
    assert '"block3": AttentionGate(32, 64, stride=4, inter_channels=8),' in code
    assert '"block4": nn.Linear(64, num_classes, bias=False),' in code
    assert "return self.classifier(pooled) + sum(gated)" in code and "SqueezeExcite(64, reduction=4)" in code
    assert "return GatedVGG(num_classes)" in code
    classic = (exported / "vgg_classic.py").read_text()
    assert "self.classifier[1:](self.classifier[0](pooled) + sum(gated))" in classic
    assert '"block2": nn.Linear(16, 4096, bias=False),' in classic
    dense = (exported / "densenet_mean.py").read_text()
    assert "torch.stack([self.classifier(pooled), *gated]).mean(dim=0)" in dense
    assert '"denseblock1": nn.Linear(' in dense and "bias=False" not in dense.split("self.gate_heads")[1]
    resnet = (exported / "resnet_concat.py").read_text()
    assert '"layer2.1": "layer2",' in resnet and '"layer4.1": "layer4",' in resnet
    assert "return self.fc(pooled) + sum(gated)" in resnet and '("layer4_attn", CBAM(' in resnet


def test_crafted_gate_values_never_reach_the_code() -> None:
    crafted = 'block5": 1}; __import__("os").system("touch PWNED"); {"'
    for params in ((("gating_slot", crafted),), (("aggregation", crafted),), (("inter_channels", "0.5"),)):
        candidate = Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "gate", params),), data=DATA)
        with pytest.raises(AttnsearchError):
            generate_code(candidate, num_classes=10)
