"""Small plug-in files the tests of issue 17 write on the spot (P1: loading, contracts, search).

Each key and file stem starts with ``p1_`` and is used by one test only: plug-ins stay loaded for the rest of the
test session, as in a real process, so no two tests may register the same key.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from attnsearch import plugin_checks, plugins
from attnsearch.model import _traced_slots

HEADER = "import torch\nfrom torch import nn\n\nimport attnsearch\n\n"


def write(folder: Path, stem: str, body: str) -> Path:
    """``folder/stem.py`` holding HEADER then ``body``; its absolute path."""
    path = folder / f"{stem}.py"
    path.write_text(HEADER + body)
    return path.resolve()


def gate(key: str, forward: str = "x * torch.sigmoid(self.weight)", init: str = "") -> str:
    """A module class registered as ``key``: a learnt per-channel weight, and ``forward`` returning ``forward``."""
    return f'''
@attnsearch.register_module("{key}", paper="P1, a gate for a test, 2026", params={{"scale": 1.0}})
class Gate(nn.Module):
    def __init__(self, channels: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), scale))
{init}
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return {forward}
'''


# A two-stage CNN whose own forward is not a Sequential: modules at its slots go in by forward hooks (stage1, a
# top-level child) and as a Sequential child (stage2.2, inside stage2).
TWO_STAGE = """
class TwoStage(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c = max(4, round(32 * width))
        self.stage1 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(x)).mean((2, 3)))


@attnsearch.register_backbone("{key}", slots={{"s1": "stage1", "s2": "stage2.2"}}, paper="P1, two stages, 2026")
def two_stage(num_classes: int, width: float = 1.0) -> nn.Module:
    return TwoStage(num_classes, width)
"""

# Two classes told apart by brightness: grey (N, H, W) uint8 images of 20 x 20, labels int64.
BRIGHTNESS = """
@attnsearch.register_dataset("{key}", classes=["dark", "bright"])
def brightness(spec):
    g = torch.Generator().manual_seed(spec.seed)
    def split(n):
        y = torch.arange(n) % 2
        x = (torch.rand(n, 20, 20, generator=g) * 100 + 120 * y[:, None, None]).to(torch.uint8)
        return x, y.to(torch.int64)
    train_x, train_y = split(48)
    val_x, val_y = split(24)
    return {{"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y}}
"""


@contextlib.contextmanager
def unloaded_after() -> Iterator[None]:
    """What is loaded in the block is unloaded after it, keys unregistered, plug-ins and their modules forgotten,
    traced slots dropped (the ``forget_plugins`` fixture wraps each test in it)."""
    before = plugin_checks.registered()
    loaded, specs = dict(plugins._LOADED), list(plugins._SPECS)
    try:
        yield
    finally:
        plugin_checks.unregister(plugin_checks.gained(before))
        for name in set(plugins._LOADED) - set(loaded):
            if name.startswith(plugins.FILE_PREFIX):
                sys.modules.pop(name, None)
        plugins._LOADED.clear()
        plugins._LOADED.update(loaded)
        plugins._SPECS[:] = specs
        _traced_slots.cache_clear()
