"""`attnsearch export` for the ResNets and cnn3: the file runs without attnsearch and equals attnsearch's model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnsearch as a
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from tests.standalone import run_standalone, save_case

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # the brief's two: CBAM inside every block of a stage and SE after another (CIFAR stem), cnn3 at MNIST's size
    "resnet18": Candidate(
        BackboneSpec("resnet18", 0.125, stem="cifar"),
        (PlacementSpec("layer3_blocks", "cbam"), PlacementSpec("layer4", "se", (("reduction", 4),))),
        data=DataSpec(image_size=32),
    ),
    "cnn3": Candidate(BackboneSpec("cnn3", 0.125), (PlacementSpec("stage2", "cbam"),), data=DataSpec(image_size=28)),
    # Bottleneck blocks, the ImageNet stem, a stage slot and its blocks slot in one stage
    "resnet50": Candidate(
        BackboneSpec("resnet50", 0.125),
        (PlacementSpec("layer2", "cbam"), PlacementSpec("layer2_blocks", "eca"), PlacementSpec("layer1_blocks", "se")),
        data=DataSpec(image_size=64),
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exported_residual")
    torch.manual_seed(0)
    for name, candidate in CASES.items():
        save_case(folder, name, candidate)
    return folder


def test_round_trip_in_a_process_without_attnsearch(exported: Path) -> None:
    found = run_standalone(exported, list(CASES), scripted=tuple(CASES), exported=tuple(CASES))
    for name in CASES:
        assert found[name]["diff"] <= 1e-5, (name, found[name])
        assert found[name]["script"] <= 1e-5 and found[name]["export"] <= 1e-5, (name, found[name])


def test_generated_code_reads_like_a_model_file(exported: Path) -> None:
    paths = sorted(str(p) for p in exported.glob("*.py"))
    for config in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", *config, *paths], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout
    code = (exported / "resnet18.py").read_text()
    assert "class BasicBlock(nn.Module):" in code and "class Bottleneck" not in code
    assert "# slot layer3_blocks: one CBAM in every block\n" in code
    assert '("0", BasicBlock(16, 32, stride=2, attn=CBAM(32))),' in code
    assert '("layer4_attn", SqueezeExcite(64, reduction=4)),' in code
    assert "self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)" in code
    assert "self.maxpool = nn.Identity()" in code
    fifty = (exported / "resnet50.py").read_text()
    assert "class Bottleneck(nn.Module):" in fifty and "class BasicBlock" not in fifty
    assert "nn.MaxPool2d(kernel_size=3, stride=2, padding=1)" in fifty
    assert '("layer2_attn", CBAM(64)),' in fifty and "attn=EfficientChannelAttention(64)" in fifty
    small = (exported / "cnn3.py").read_text()
    assert '("stage2_attn", CBAM(16)),' in small and '("stage3", _stage(16, 32)),' in small
    assert "IMAGE_SIZE = 28  #" in small


def test_a_block_module_no_placement_names_is_refused() -> None:
    from attnsearch.codegen_families import resnet_body

    model = a.build_model("resnet18", {"layer1_blocks": "se"}, num_classes=3, width=0.125, image_size=32)
    plain = Candidate(BackboneSpec("resnet18", 0.125), data=DataSpec(image_size=32))
    with pytest.raises(ValueError, match="holds a module no placement names"):
        resnet_body(model, plain, {})
