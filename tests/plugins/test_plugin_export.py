"""Export and replay of trials with plug-in modules: the exported file runs where attnsearch cannot be imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from plugin_files import TWO_STAGE as TWO_STAGE_P1
from plugin_files import gate, write
from recorded_study import GATE, Edited, PluginStudy, commands, plugin_study

import attnsearch as a
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from attnsearch.cli import main
from attnsearch.codegen_plugin import _analyse, plugin_code
from attnsearch.errors import AttnsearchError
from tests.standalone import run_standalone, save_case

pytestmark = pytest.mark.usefixtures("one_thread", "forget_plugins")  # each test unloads what it loads


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> PluginStudy:
    return plugin_study(tmp_path_factory)


def _trial(study: PluginStudy, label: str) -> int:
    for path in study.folder.glob("trials/*/trial.json"):
        record = json.loads(path.read_text())
        if record["placements"] == label:
            return record["number"]
    raise AssertionError(f"no trial {label}")


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (GATE, ""),
        ("import torch\nimport numpy\n", "it imports numpy (line 2)"),
        ("from . import helpers\n", "it has a relative import (line 1)"),
        ("import torch\nfrom attnsearch.attention import at_least\n", "it imports attnsearch.attention (line 2)"),
        ("import attnsearch\nimport torch\nX = attnsearch.register_module('k', paper='-')\n", "it uses attnsearch"),
        ("import torch; import attnsearch\n", "line 1 holds more than attnsearch's import or decorator"),
        ("import torch\n\nclass VGG(torch.nn.Module):\n    pass\n", "its top-level name VGG is one the exported"),
        ("from typing import Callable\n", "its top-level name Callable is one the exported file defines"),
        ("import torch.nn.functional as F\nfrom torch import nn\n", ""),  # the same objects as the file's names
    ],
)
def test_embedded_only_when_torch_and_stdlib_alone(source: str, why: str) -> None:
    found = _analyse("p", "/nowhere/p.py", source.encode())
    assert found.why.startswith(why) and bool(found.why) == bool(why), found.why


def test_embedded_source_is_the_file_less_its_attnsearch_lines() -> None:
    found = _analyse("p", "/nowhere/p.py", GATE.encode())
    assert found.future == ("from __future__ import annotations",)  # moved to the exported file's top
    removed = [line for line in GATE.splitlines() if "attnsearch" in line or "__future__" in line]
    assert len(removed) == 3  # import attnsearch, the decorator, from __future__
    assert [line for line in found.kept.splitlines() if line.strip()] == [
        line for line in GATE.splitlines() if line.strip() and line not in removed
    ]
    assert "\n\n\n\n" not in found.kept and "class P2Gate(nn.Module):\n" in found.kept


def test_two_embedded_plugins_defining_one_name_are_refused(tmp_path: Path) -> None:
    # both files define `class Gate`: one exported file cannot hold both; sharing `import torch` is fine
    a.load_plugins([str(write(tmp_path, f"p2_twin_{x}", gate(f"p2_twin_{x}"))) for x in "ab"])
    assert "class Gate(nn.Module):" in plugin_code(["p2_twin_a"]).sections[0]
    with pytest.raises(AttnsearchError, match=r"plug-ins p2_twin_a\.py and p2_twin_b\.py both define Gate at their"):
        plugin_code(["p2_twin_a", "p2_twin_b"])


def test_export_embeds_one_plugin_copies_the_other_and_runs_without_attnsearch(
    study: PluginStudy, tmp_path: Path
) -> None:
    number = _trial(study, "block3=p2_gate block5=p2_npgate")
    out = tmp_path / "model.py"
    done = CliRunner().invoke(main, ["export", str(study.folder), "--trial", str(number), "-o", str(out), "--weights"])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.py", "p2_npgate.py"]
    assert (tmp_path / "p2_npgate.py").read_bytes() == study.np_gate.read_bytes()  # copied verbatim
    code = out.read_text()
    assert "class P2Gate(nn.Module):" in code and "import attnsearch" not in code and "@attnsearch" not in code
    assert '_plugin_p2_npgate = _load_plugin("p2_npgate.py")' in code
    assert "it needs PyTorch and the plug-in file p2_npgate.py beside it, which it loads." in code
    assert "P2Gate(32)" in code and "_plugin_p2_npgate.NumpyGate(64)" in code
    # attnsearch's model of the trial, with its weights, on one input: the exported file must give the same
    record = json.loads((study.folder / "trials" / str(number) / "trial.json").read_text())
    candidate = Candidate.from_dict(record["candidate"])
    b = candidate.backbone
    model = a.build_model(b.name, candidate.placement_dict(), num_classes=10, width=b.width, head=b.head, image_size=32)
    model.load_state_dict(torch.load(study.folder / "trials" / str(number) / "model.pt", weights_only=True))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.save({"x": x, "expected": model(x)}, tmp_path / "model_io.pt")
    assert run_standalone(tmp_path, ["model"])["model"]["diff"] == 0.0


def test_export_of_an_embedded_plugin_alone_writes_one_file(study: PluginStudy, tmp_path: Path) -> None:
    number = _trial(study, "block3=p2_gate")
    done = CliRunner().invoke(main, ["export", str(study.folder), "--trial", str(number), "-o", str(tmp_path / "m.py")])
    assert done.exit_code == 0, done.output
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]
    assert "one file that needs only PyTorch." in (tmp_path / "m.py").read_text()


def test_replay_reproduces_a_plugin_trial_exactly(study: PluginStudy) -> None:
    number = _trial(study, "block3=p2_gate block5=p2_npgate")
    done = CliRunner().invoke(main, ["replay", str(study.folder), "--trial", str(number)])
    assert done.exit_code == 0, done.output
    assert "val_acc reproduced exactly" in done.output and "weights identical to model.pt" in done.output


def test_a_changed_plugin_warns_and_a_deleted_one_is_refused(study: PluginStudy, tmp_path: Path) -> None:
    number = str(_trial(study, "block3=p2_gate"))
    export = ["export", str(study.folder), "--trial", number, "-o", str(tmp_path / "model.py")]
    replay = ["replay", str(study.folder), "--trial", number]
    with Edited(study.gate, text=GATE + "# edited after the search\n"):
        (export_code, export_err), (replay_code, replay_err) = commands(export, replay, cwd=tmp_path)
    warning = f"attnsearch: warning: plug-in attnsearch_plugin_p2_gate changed since trial {number} was trained"
    assert export_code == 0 and replay_code == 0
    for err in (export_err, replay_err):
        warnings = [line for line in err.splitlines() if "warning" in line]
        assert len(warnings) == 1 and warnings[0].startswith(warning) and warnings[0].endswith("results may differ")
    assert "# edited after the search" in (tmp_path / "model.py").read_text()
    with Edited(study.gate):  # moved away
        refused = commands(export, replay, cwd=tmp_path)
    for code, err in refused:
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"trial {number} needs plug-in attnsearch_plugin_p2_gate from {study.gate.resolve()}" in err


# stage1 follows a child of a plain Sequential, stage2 a child of a module with a forward of its own
TWO_STAGE = """# A two-stage CNN of my own.

import attnsearch
from torch import nn


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


@attnsearch.register_backbone("p2_two", slots={"stage1": "stem.2", "stage2": "down.act"})
def two_stage(num_classes: int, width: float = 1.0) -> nn.Module:
    c = max(4, int(16 * width))
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()))
    model.add_module("down", Stage(c, 2 * c))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(2 * c, num_classes))
    return model
"""


def _save_scrambled(candidate: Candidate, folder: Path) -> str:
    """attnsearch's model of ``candidate`` with moved weights, as model.py, model.pt and model_io.pt in ``folder``;
    its code."""
    torch.manual_seed(0)
    save_case(folder, "model", candidate)
    return (folder / "model.py").read_text()


def test_export_of_a_plugin_backbone_calls_its_factory_and_places_modules_alike(
    study: PluginStudy, tmp_path: Path
) -> None:
    plugin = tmp_path / "p2_two.py"
    plugin.write_text(TWO_STAGE)
    a.load_plugins([str(plugin), str(study.gate)])
    placements = (PlacementSpec("stage1", "p2_gate", (("scale", 2.0),)), PlacementSpec("stage2", "se"))
    code = _save_scrambled(Candidate(BackboneSpec("p2_two", 0.5), placements, data=DataSpec(image_size=16)), tmp_path)
    plugin.unlink()  # embedded: the exported file needs it no more
    assert "model = two_stage(num_classes=num_classes, width=0.5)" in code
    assert '("2", "stage1_attn", P2Gate(8, scale=2.0))' in code and '("act", "stage2_attn", SqueezeExcite(16))' in code
    assert run_standalone(tmp_path, ["model"])["model"]["diff"] == 0.0


def test_export_of_a_plugin_backbone_hooked_at_its_top_level(tmp_path: Path) -> None:
    # P1's two-stage CNN: a model with a forward of its own, slot s1 its top-level child (a forward hook), s2 inside
    # a Sequential child; the file imports attnsearch and torch only, and defines a class besides its factory
    plugin = write(tmp_path, "p2_top", TWO_STAGE_P1.format(key="p2_top_two"))
    a.load_plugins([str(plugin)])
    placements = (PlacementSpec("s1", "eca"), PlacementSpec("s2", "cbam", (("reduction", 2),)))
    code = _save_scrambled(
        Candidate(BackboneSpec("p2_top_two", 0.25), placements, data=DataSpec(image_size=16)), tmp_path
    )
    assert "class TwoStage(nn.Module):" in code and "import attnsearch" not in code
    assert run_standalone(tmp_path, ["model"])["model"]["diff"] == 0.0
