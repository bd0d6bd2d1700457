"""`attnsearch export` for the ResNets and cnn3: the file runs without attnsearch and equals attnsearch's model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnsearch as a
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from attnsearch.export import generate_code

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = str(Path(torch.__file__).resolve().parents[1])

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

# Runs with -I -S and only torch's site-packages on sys.path: attnsearch (an editable install) cannot be imported.
CHECK = """
import importlib.util, json, sys, warnings
sys.path.append(SITE)
try:
    import attnsearch
except ImportError:
    pass
else:
    raise SystemExit("attnsearch is importable")
import torch

torch.set_num_threads(1)
warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in favour of torch.export
found = {}
for name in NAMES:
    spec = importlib.util.spec_from_file_location(name, f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(torch.load(f"{name}.pt", weights_only=True), strict=True)
    model.eval()
    io_ = torch.load(f"{name}_io.pt", weights_only=True)
    with torch.no_grad():
        out = model(io_["x"])
        scripted = torch.jit.script(model)(io_["x"])
        exported = torch.export.export(model, (io_["x"],)).module()(io_["x"])
    found[name] = {
        "diff": (out - io_["expected"]).abs().max().item(),
        "script": (scripted - out).abs().max().item(),
        "export": (exported - out).abs().max().item(),
    }
found["modules"] = sorted(m for m in sys.modules if m.startswith("attnsearch"))
print(json.dumps(found))
"""


def scramble(model: torch.nn.Module) -> None:
    # BatchNorm starts at the identity and some gates at zero: move every tensor so each branch counts
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exported_residual")
    torch.manual_seed(0)
    for name, candidate in CASES.items():
        b, size = candidate.backbone, candidate.data.image_size
        model = a.build_model(
            b.name, candidate.placement_dict(), num_classes=10, width=b.width, image_size=size, stem=b.stem
        )
        scramble(model)
        model.eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = model(x)
        torch.save(model.state_dict(), folder / f"{name}.pt")
        torch.save({"x": x, "expected": expected}, folder / f"{name}_io.pt")
        (folder / f"{name}.py").write_text(generate_code(candidate, num_classes=10))
    return folder


def test_round_trip_in_a_process_without_attnsearch(exported: Path) -> None:
    script = CHECK.replace("SITE", repr(SITE_PACKAGES)).replace("NAMES", repr(list(CASES)))
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], cwd=exported, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["modules"] == []
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
