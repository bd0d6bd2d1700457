"""A tiny study searched with two plug-in modules, shared by test_plugin_records.py and test_plugin_export.py.

``p2_gate.py`` imports torch, the standard library and attnsearch's ``register_module`` only: export embeds it.
``p2_npgate.py`` also imports numpy: export copies it beside the exported file. The study is a grid of 2 trials on
shapes (vgg11_bn at width 0.125, 32 px, 64 training and 32 validation images, 1 epoch): block3 always holds
p2_gate, block5 holds nothing (trial 0) or p2_npgate (trial 1); both trials keep their weights. It is run once per
test session, through ``attnsearch run --plugin``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnsearch.cli import main
from plugin_files import unloaded_after

GATE = '''"""A channel gate of my own: x * sigmoid(w * scale + log 3), w per channel."""

from __future__ import annotations

import math

import torch
from torch import nn

import attnsearch


@attnsearch.register_module("p2_gate", paper="P2, A Gate of My Own, 2026", params={"scale": 1.0})
class P2Gate(nn.Module):
    def __init__(self, channels: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, 1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.weight * self.scale + math.log(3.0))
'''

NP_GATE = '''"""A gate whose offset numpy computes: this file needs numpy, so export copies it."""

import numpy as np
import torch
from torch import nn

from attnsearch import register_module

OFFSET = float(np.log(2.0))


@register_module("p2_npgate", paper="P2, A Numpy Gate, 2026")
class NumpyGate(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.weight + OFFSET)
'''

SPACE = {
    "name": "p2plug",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["p2_gate"], "block5": ["none", "p2_npgate"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "search": {"sampler": "grid", "n_trials": 2, "pruner": "none"},
    "execution": {"threads": 1},
}


@dataclass(frozen=True)
class PluginStudy:
    folder: Path  # the results folder of the study
    gate: Path  # p2_gate.py
    np_gate: Path  # p2_npgate.py
    output: str  # what `attnsearch run` printed


_DONE: dict[str, PluginStudy] = {}


def plugin_study(tmp_path_factory: pytest.TempPathFactory) -> PluginStudy:
    """The study, run the first time a test asks for it in this session."""
    if "study" not in _DONE:
        root = tmp_path_factory.mktemp("p2_plugin_study")
        gate, np_gate, space = root / "p2_gate.py", root / "p2_npgate.py", root / "space.yaml"
        gate.write_text(GATE)
        np_gate.write_text(NP_GATE)
        space.write_text(yaml.safe_dump(SPACE))
        args = ["run", str(space), "--results", str(root / "results"), "--no-dashboard", "--keep-weights", "2"]
        with unloaded_after():  # the tests load what they need: export and replay from the records themselves
            done = CliRunner().invoke(main, [*args, "--plugin", str(gate), "--plugin", str(np_gate)])
        assert done.exit_code == 0, done.output
        _DONE["study"] = PluginStudy(root / "results" / SPACE["name"], gate, np_gate, done.output)
    return _DONE["study"]


class Edited:
    """A plug-in file changed (or moved away) for the length of a ``with`` block, then put back byte for byte."""

    def __init__(self, path: Path, *, text: str | None = None) -> None:
        self.path, self.text, self.saved = path, text, path.read_bytes()

    def __enter__(self) -> Path:
        if self.text is None:
            shutil.move(self.path, self.path.with_suffix(".away"))
        else:
            self.path.write_text(self.text)
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.with_suffix(".away").unlink(missing_ok=True)
        self.path.write_bytes(self.saved)


# several commands in one fresh process (a plug-in loaded by the first stays loaded for the next)
_COMMANDS = """
import sys
from attnsearch.cli import main
for args in ARGS:
    code = 0
    try:
        main(args)
    except SystemExit as done:
        code = done.code
    print(f"== exit {code}", file=sys.stderr, flush=True)
"""


def commands(*argv: list[str], cwd: Path) -> list[tuple[int, str]]:
    """Each command's exit code and its stderr lines that start with ``attnsearch:``, the commands run one after
    the other in one fresh process (no plug-in loaded at its start)."""
    done = subprocess.run(
        [sys.executable, "-c", _COMMANDS.replace("ARGS", repr(list(argv)))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found, lines = [], []
    for line in done.stderr.splitlines():
        if line.startswith("== exit "):
            found.append((int(line.split()[-1]), "\n".join(lines)))
            lines = []
        elif line.startswith("attnsearch:"):
            lines.append(line)
    return found
