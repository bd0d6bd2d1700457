"""The reference grid of ``attnsearch bench search``: every candidate of a small space, trained once in full.

The reference space is small enough to enumerate (3 slots x 4 modules = 64 candidates on ``shapes``, VGG11-BN at
an eighth of its width; the quick one has 4). Each candidate is trained once in full, its validation accuracy after
each epoch cached on disk (keyed by a hash of the space and the torch version, so a rerun is cheap); the searches
of :mod:`attnsearch.bench.search_replay` are replayed on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .output import BENCH_FOLDER

__all__ = ["GRID_CACHE", "QUICK_SPACE", "REFERENCE_SPACE", "GridPoint", "SearchGrid", "evaluate_grid", "grid_key"]

GRID_CACHE = "search_grid.json"
_MODULES = ["none", "se", "cbam", "self_attention"]
REFERENCE_SPACE: dict[str, Any] = {
    "name": "bench-search",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block2": _MODULES, "block3": _MODULES, "block4": _MODULES},
    # long enough for the candidates to learn (the first grid, 1536 images for 4 epochs, topped out at 37% and its
    # early epochs said almost nothing of the final scores), small enough to train in full on a 2-core CPU
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 3072, "val_size": 1024},
    # no augmentation: a model this small learns more in a few epochs without it
    "train": {"epochs": 8, "batch_size": 32, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05, "augment": []},
}
QUICK_SPACE: dict[str, Any] = {
    "name": "bench-search-quick",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["none", "se"], "block4": ["none", "eca"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32},
    "train": {"epochs": 2, "batch_size": 32, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05},
}


@dataclass(frozen=True)
class GridPoint:
    params: dict[str, Any]  # the trial's Optuna parameters (slot -> module)
    curve: tuple[float, ...]  # validation accuracy after each epoch, 0..1
    placements: str = ""  # the candidate written out
    seconds: float = 0.0  # its training time, validation included


@dataclass
class SearchGrid:
    """Every candidate of a space, trained once, with its per-epoch validation accuracy.

    Example:
        >>> grid = SearchGrid(QUICK_SPACE, [GridPoint({"block3": "se"}, (0.5, 0.75))])
        >>> grid.best, grid.epochs, grid.compute
        (0.75, 2, 2)
    """

    space: dict[str, Any]  # the space file (as parsed YAML) whose grid this is
    points: list[GridPoint]
    torch: str = ""  # the torch version that trained it
    seconds: float = 0.0  # wall time of the whole grid

    def __post_init__(self) -> None:
        self._by_params = {_params_key(p.params): p for p in self.points}

    def point(self, params: dict[str, Any]) -> GridPoint:
        return self._by_params[_params_key(params)]

    @property
    def best(self) -> float:
        return max(p.curve[-1] for p in self.points)

    @property
    def epochs(self) -> int:
        return max(len(p.curve) for p in self.points)

    @property
    def compute(self) -> int:
        """Epochs to train every candidate in full."""
        return sum(len(p.curve) for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "torch": self.torch,
            "seconds": self.seconds,
            "points": [asdict(p) for p in self.points],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchGrid:
        points = [
            GridPoint(p["params"], tuple(p["curve"]), p.get("placements", ""), p.get("seconds", 0.0))
            for p in d["points"]
        ]
        return cls(d["space"], points, d.get("torch", ""), d.get("seconds", 0.0))


def grid_key(space: dict[str, Any]) -> str:
    """The cache key of a space's grid: a hash of the space and the torch version."""
    import torch

    text = json.dumps({"space": space, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluate_grid(
    space: dict[str, Any],
    *,
    cache: Path | str | None = BENCH_FOLDER / GRID_CACHE,
    threads: int | None = None,
    on_progress: Callable[[int, int, GridPoint], None] | None = None,
) -> tuple[SearchGrid, bool]:
    """Train every candidate of ``space`` once (or read them from ``cache``); returns the grid and whether cached.

    Each candidate is built and trained the way a trial's worker does it (the seed before building, then
    ``train_model`` with the space's recipe), validation after each epoch. ``cache`` is a JSON file holding one
    grid per key (:func:`grid_key`); None trains without reading or writing any.
    """
    import optuna
    import torch

    from ..data import load_dataset
    from ..search.worker import build_candidate
    from ..schema import plain
    from ..search.store import atomic_write
    from ..space import parse_space
    from ..train import train_model

    key = grid_key(space)
    stored: dict[str, Any] = {}
    if cache is not None and Path(cache).exists():
        stored = json.loads(Path(cache).read_text(encoding="utf-8"))
        if key in stored:
            return SearchGrid.from_dict(stored[key]), True
    parsed = parse_space({**space, "search": {"sampler": "grid"}})
    dataset = load_dataset(parsed.data_spec())
    design = parsed.grid()
    points = []
    began = time.perf_counter()
    for i, params in enumerate(design):
        candidate = parsed.suggest(optuna.trial.FixedTrial(params))
        started = time.perf_counter()
        model = build_candidate(candidate, dataset, candidate.seed)  # exactly as a trial builds it
        # every epoch validated (train_model's default): the searches replayed from the grid pick the epochs their
        # pruners look at
        result = train_model(model, dataset, candidate.train, seed=candidate.seed, threads=threads)
        if result.state != "complete":
            raise RuntimeError(f"grid candidate {candidate.describe()} ended {result.state} ({result.reason})")
        point = GridPoint(
            params,
            tuple(h["val_acc"] for h in result.history),
            candidate.describe(),
            time.perf_counter() - started,
        )
        points.append(point)
        if on_progress is not None:
            on_progress(i + 1, len(design), point)
    grid = SearchGrid(space, points, torch.__version__, time.perf_counter() - began)
    if cache is not None:
        stored[key] = grid.to_dict()
        # standard JSON: a NaN or an infinity (in a cache an older version wrote) as null
        atomic_write(Path(cache), json.dumps(plain(stored), indent=1, allow_nan=False).encode() + b"\n")
    return grid, False


def _params_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))
