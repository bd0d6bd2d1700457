"""Plug-ins searched end to end (issue 17): a module on shapes, a backbone with two slots fed by a dataset plug-in,
a space that names a key no plug-in provides, and the built-ins held to the same contract."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from plugin_files import BRIGHTNESS, TWO_STAGE, gate, write

import attnsearch as a
from attnsearch.cli import main
from attnsearch.plugin_checks import check_module

pytestmark = pytest.mark.usefixtures("one_thread", "forget_plugins")

TINY = {
    "name": "p1",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "search": {"sampler": "grid", "pruner": "none"},
    "execution": {"threads": 1},
}


def space_file(folder: Path, **sections: object) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, **sections}))
    return path


def search(space: Path, results: Path, *plugins: Path) -> list[dict]:
    flags = [arg for plugin in plugins for arg in ("--plugin", str(plugin))]
    done = CliRunner().invoke(main, ["run", str(space), "--results", str(results), "--no-dashboard", *flags])
    assert done.exit_code == 0, done.output
    found = sorted(results.glob("*/trials/*/trial.json"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text()) for p in found]


def test_a_plugin_module_is_searched_on_shapes(tmp_path: Path) -> None:
    plugin = write(tmp_path, "p1_searched", gate("p1_searched"))
    space = space_file(tmp_path, slots={"block3": ["p1_searched"], "block5": ["none", "se"]})
    records = search(space, tmp_path / "results", plugin)
    assert [r["state"] for r in records] == ["complete", "complete"]
    assert {r["candidate"]["placements"][0]["module"] for r in records} == {"p1_searched"}
    for record in records:
        assert 0 <= record["metrics"]["val_acc"] <= 1 and record["metrics"]["params"] > 0
        assert len(record["history"]) == 1 and record["candidate"]["backbone"]["name"] == "vgg11_bn"


def test_a_plugin_backbone_with_two_slots_learns_a_plugin_dataset(tmp_path: Path) -> None:
    models = write(tmp_path, "p1_two_stage", TWO_STAGE.format(key="p1_two") + gate("p1_two_gate"))
    data = write(tmp_path, "p1_brightness", BRIGHTNESS.format(key="p1_brightness"))
    space = space_file(
        tmp_path,
        backbone={"name": "p1_two", "width": 0.25},
        slots={"s1": ["p1_two_gate"], "s2": ["none", "se"]},
        data={"dataset": "p1_brightness", "image_size": 16},
        train={"epochs": 3, "batch_size": 16, "lr": 0.05},
    )
    records = search(space, tmp_path / "results", models, data)
    assert [r["state"] for r in records] == ["complete", "complete"]
    placed = sorted(tuple(p["slot"] for p in r["candidate"]["placements"]) for r in records)
    assert placed == [("s1",), ("s1", "s2")]
    for record in records:
        assert record["candidate"]["backbone"]["name"] == "p1_two"
        assert record["candidate"]["data"]["dataset"] == "p1_brightness"
        # dark against bright images: three epochs on 48 of them do better than a coin
        assert record["metrics"]["val_acc"] > 0.6, record["metrics"]


GHOST = """open({marker!r}, "w").write("imported")
import attnsearch


@attnsearch.register_module("p1_ghost", paper="-")
class Ghost:
    pass
"""

READ_SPACE = """
import json, sys
before = set(sys.modules)
from attnsearch.space import load_space
from attnsearch.errors import AttnsearchError
try:
    load_space(sys.argv[1])
    said = None
except AttnsearchError as err:
    said = str(err)
new = {name: getattr(module, "__file__", None) or "" for name, module in sys.modules.items() if name not in before}
print(json.dumps({"said": said, "new": new}))
"""


@pytest.mark.parametrize(
    ("section", "says"),
    [
        (
            {"slots": {"block3": ["none", "p1_ghost"]}},
            "slots.block3[1]: unknown attention module 'p1_ghost'; valid: none, se",
        ),
        ({"backbone": {"name": "p1_ghost"}, "slots": {"all": ["se"]}}, "backbone.name: unknown backbone 'p1_ghost'"),
        ({"data": {"dataset": "p1_ghost"}, "slots": {"block3": ["se"]}}, "data.dataset: unknown dataset 'p1_ghost'"),
    ],
)
def test_a_space_naming_an_unloaded_key_is_refused_without_any_import(tmp_path: Path, section: dict, says: str) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "p1_ghost.py").write_text(GHOST.format(marker=str(marker)))  # beside the space, in the cwd
    space = space_file(tmp_path, **section)
    done = subprocess.run(
        [sys.executable, "-c", READ_SPACE, str(space)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["said"].startswith(says) and "pass --plugin FILE" in found["said"], found["said"]
    assert not marker.exists() and "p1_ghost" not in found["new"] and "attnsearch_plugin_p1_ghost" not in found["new"]
    # nothing from the space's folder, and nothing outside the standard library, attnsearch and its dependencies
    assert not [name for name, file in found["new"].items() if file.startswith(str(tmp_path))]
    site = {Path(p).resolve() for p in sys.path if p.endswith("site-packages")}
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    package = Path(a.__file__).parent.resolve()
    outside = [
        name
        for name, file in found["new"].items()
        if Path(file).is_absolute()  # torch.ops and torch.classes name no real file
        and not any(Path(file).resolve().is_relative_to(root) for root in (*site, stdlib, package))
    ]
    assert outside == []


@pytest.mark.parametrize("key", [k for k in a.list_modules() if k != "gate"])
def test_every_builtin_module_keeps_the_contract_plugins_are_held_to(key: str) -> None:
    check_module(key)
    assert torch.is_grad_enabled()
