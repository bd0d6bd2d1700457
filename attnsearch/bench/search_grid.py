"""The reference grid of ``attnsearch bench search``: every candidate of a small space, trained in full per seed.

The reference space is small enough to enumerate (3 slots x 4 modules = 64 candidates on ``shapes``, VGG11-BN at
an eighth of its width; the quick one has 4). Each candidate is trained in full under each training seed
(:func:`training_seed_space`: the data and its seed stay; seed 0 is the space as written), its validation
accuracy after each epoch cached on disk per seed (keyed by a hash of the space and the torch version, so a rerun
is cheap; written after every candidate, so an interrupted training resumes where it stopped). The searches of
:mod:`attnsearch.bench.search_replay` are replayed on it, and :mod:`attnsearch.bench.search_truth` averages the
seeds into the ground truth they are judged against.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import BENCH_FOLDER, _cpu_model

__all__ = [
    "GRID_CACHE",
    "QUICK_SPACE",
    "REFERENCE_SPACE",
    "GridPoint",
    "GridProgress",
    "SearchGrid",
    "evaluate_grid",
    "evaluate_grids",
    "grid_key",
    "training_seed_space",
]

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
    machine: dict[str, Any] = field(default_factory=dict)  # the CPU model and torch threads that trained it

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
            "machine": self.machine,
            "points": [asdict(p) for p in self.points],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchGrid:
        points = [
            GridPoint(p["params"], tuple(p["curve"]), p.get("placements", ""), p.get("seconds", 0.0))
            for p in d["points"]
        ]
        return cls(d["space"], points, d.get("torch", ""), d.get("seconds", 0.0), d.get("machine", {}))


def grid_key(space: dict[str, Any]) -> str:
    """The cache key of a space's grid: a hash of the space and the torch version."""
    import torch

    text = json.dumps({"space": space, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_seed_space(space: dict[str, Any], seed: int) -> dict[str, Any]:
    """``space`` trained with its training seed moved on by ``seed``: the data (and its seed) are untouched.

    Seed 0 is ``space`` itself, so the first draw keeps the cache key it always had; seed ``k`` sets ``train.seed``
    to the space's own (0 unless given) plus ``k``.

    Example:
        >>> training_seed_space(QUICK_SPACE, 0) is QUICK_SPACE
        True
        >>> training_seed_space(QUICK_SPACE, 2)["train"]["seed"], training_seed_space(QUICK_SPACE, 2)["data"]
        (2, {'dataset': 'shapes', 'image_size': 32, 'train_size': 64, 'val_size': 32})
    """
    if seed == 0:
        return space
    train = dict(space.get("train", {}))
    train["seed"] = int(train.get("seed", 0)) + seed
    return {**space, "train": train}


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
    grid per key (:func:`grid_key`); None trains without reading or writing any. The cache is written after every
    candidate (the grid marked ``"complete": false`` until its last one), so an interrupted training keeps what
    finished and the next call trains only the rest; ``on_progress(done, total, point)`` follows each candidate
    trained now. The grid's ``seconds`` add up the wall time of every call that trained part of it.
    """
    import optuna
    import torch

    from ..data import load_dataset
    from ..search.worker import build_candidate
    from ..space import parse_space
    from ..train import train_model

    key = grid_key(space)
    entry = _read_cache(cache).get(key)
    if entry is not None and entry.get("complete", True):
        return SearchGrid.from_dict(entry), True
    parsed = parse_space({**space, "search": {"sampler": "grid"}})
    design = parsed.grid()
    done = {_params_key(p.params): p for p in SearchGrid.from_dict(entry).points} if entry is not None else {}
    earlier = entry.get("seconds", 0.0) if entry is not None else 0.0
    # the same seed's draw is not bit-identical across CPUs (kernels differ): say which one trained it
    machine = {"cpu": _cpu_model(), "threads": threads or torch.get_num_threads()}
    began = time.perf_counter()
    dataset = None
    for params in design:
        if _params_key(params) in done:
            continue
        if dataset is None:
            dataset = load_dataset(parsed.data_spec())
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
        done[_params_key(params)] = point
        points = [done[_params_key(p)] for p in design if _params_key(p) in done]  # in the design's order
        grid = SearchGrid(space, points, torch.__version__, earlier + time.perf_counter() - began, machine)
        if cache is not None:
            _write_cache(cache, key, {**grid.to_dict(), "complete": len(points) == len(design)})
        if on_progress is not None:
            on_progress(len(points), len(design), point)
    grid = SearchGrid(space, [done[_params_key(p)] for p in design], torch.__version__, earlier, machine)
    if dataset is None and cache is not None:  # every candidate was in a cache entry never marked complete
        _write_cache(cache, key, {**grid.to_dict(), "complete": True})
    grid.seconds = earlier + time.perf_counter() - began
    return grid, False


@dataclass(frozen=True)
class GridProgress:
    """One candidate of one seed's grid trained, as :func:`evaluate_grids` reports it."""

    seed: int  # the training seed (0: the space's own)
    seeds: int  # training seeds asked for
    done: int  # candidates of this seed's grid finished (those read from the cache included)
    total: int  # candidates in one grid
    point: GridPoint
    eta_seconds: float  # left for every grid: the mean time of the candidates trained in this call x those to go


def evaluate_grids(
    space: dict[str, Any],
    seeds: int,
    *,
    cache: Path | str | None = BENCH_FOLDER / GRID_CACHE,
    threads: int | None = None,
    on_progress: Callable[[GridProgress], None] | None = None,
) -> list[tuple[SearchGrid, bool]]:
    """:func:`evaluate_grid` for training seeds 0 to ``seeds - 1`` (:func:`training_seed_space`), each cached and
    resumable on its own; one (grid, cached) per seed. The same data and recipe, only the training seed changes.

    Raises:
        ValueError: ``seeds`` below 1.

    Example:
        >>> grids = evaluate_grids(QUICK_SPACE, 3, cache=None)  # doctest: +SKIP
        >>> [len(grid.points) for grid, _ in grids]  # doctest: +SKIP
        [4, 4, 4]
        >>> evaluate_grids(QUICK_SPACE, 0)
        Traceback (most recent call last):
        ValueError: a grid needs at least one training seed, got 0
    """
    if seeds < 1:
        raise ValueError(f"a grid needs at least one training seed, got {seeds}")
    spaces = [training_seed_space(space, seed) for seed in range(seeds)]
    stored = _read_cache(cache)
    size = _design_size(space)
    left = 0  # candidates still to train over every seed
    for seeded in spaces:
        entry = stored.get(grid_key(seeded))
        left += 0 if entry is not None and entry.get("complete", True) else size - len((entry or {}).get("points", []))
    spent: list[float] = []
    grids = []
    for seed, seeded in enumerate(spaces):

        def report(done: int, total: int, point: GridPoint, seed: int = seed) -> None:
            spent.append(point.seconds)
            if on_progress is not None:
                eta = (left - len(spent)) * sum(spent) / len(spent)
                on_progress(GridProgress(seed, seeds, done, total, point, eta))

        grids.append(evaluate_grid(seeded, cache=cache, threads=threads, on_progress=report))
    return grids


def _design_size(space: dict[str, Any]) -> int:
    from ..space import parse_space

    return len(parse_space({**space, "search": {"sampler": "grid"}}, check_data=False).grid())


def _read_cache(cache: Path | str | None) -> dict[str, Any]:
    if cache is None or not Path(cache).exists():
        return {}
    return json.loads(Path(cache).read_text(encoding="utf-8"))


def _write_cache(cache: Path | str, key: str, entry: dict[str, Any]) -> None:
    """Set one grid's entry, read afresh just before, so that another grid written meanwhile is kept."""
    from ..schema import plain
    from ..search.store import atomic_write

    stored = _read_cache(cache)
    stored[key] = entry
    # standard JSON: a NaN or an infinity (in a cache an older version wrote) as null
    atomic_write(Path(cache), json.dumps(plain(stored), indent=1, allow_nan=False).encode() + b"\n")


def _params_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))
