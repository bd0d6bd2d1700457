"""``attnsearch bench search``: how much compute the search needs to find the best candidate of a space.

A reference space small enough to enumerate (3 slots x 4 modules = 64 candidates on ``shapes``, VGG11-BN at an
eighth of its width) is trained once in full, every candidate's validation accuracy after each epoch cached on
disk (keyed by a hash of the space and the torch version, so a rerun is cheap). Searches are then replayed from
the cache: Optuna's own samplers and pruner, configured as ``attnsearch run`` configures them, in an in-memory
study, seeing the cached scores of the epochs a trial validates (``SearchSpace.first_val_epoch`` on, and the
last), epoch by epoch. As in the runner, a trial whose pruner says stop after an epoch
is pruned (even after its last epoch), and a candidate proposed again reuses its recorded score at no cost.

Compute is counted in epochs trained: a complete trial costs its epochs, a pruned one the epochs it ran. For each
budget (a share of the grid's compute) the regret of a search is the grid's best final accuracy minus the best
final accuracy of a complete trial it found within the budget, in accuracy points.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import BENCH_FOLDER, load_average

__all__ = [
    "METHODS",
    "QUICK_SPACE",
    "REFERENCE_SPACE",
    "GridPoint",
    "SearchBench",
    "SearchGrid",
    "SearchMethod",
    "SearchTrace",
    "TraceTrial",
    "bench_search",
    "evaluate_grid",
    "simulate_search",
]

GRID_CACHE = "search_grid.json"
TARGET_POINTS = 0.5  # "within half an accuracy point of the grid's best"
BUDGETS = (0.10, 0.25, 0.50)  # shares of the grid's compute in the table
# name -> (sampler, pruner), as a space file names them
METHODS: dict[str, tuple[str, str]] = {
    "tpe + median pruning": ("tpe", "median"),
    "tpe": ("tpe", "none"),
    "random": ("random", "none"),
    "random + median pruning": ("random", "median"),
}
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


# ------------------------------------------------------------------------------------------------ the grid


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
        atomic_write(Path(cache), json.dumps(stored, indent=1).encode() + b"\n")
    return grid, False


# ------------------------------------------------------------------------------------------------ simulated searches


@dataclass(frozen=True)
class TraceTrial:
    params: dict[str, Any]
    state: str  # complete | pruned | reused (a duplicate: the recorded score, no compute)
    epochs: int  # epochs trained, the compute this trial cost
    value: float | None  # final accuracy of a complete (or reused) trial
    compute: int  # epochs trained by the whole search up to and including this trial


@dataclass
class SearchTrace:
    """One simulated search: its trials in order, with the compute spent so far after each.

    Example:
        >>> trace = SearchTrace([TraceTrial({}, "complete", 2, 0.5, 2), TraceTrial({}, "pruned", 1, None, 3)])
        >>> trace.best_within(2), trace.best_within(1), trace.compute
        (0.5, None, 3)
    """

    trials: list[TraceTrial] = field(default_factory=list)

    @property
    def compute(self) -> int:
        return self.trials[-1].compute if self.trials else 0

    def best_within(self, budget: float) -> float | None:
        """The best score of a complete trial finished within ``budget`` epochs; None when there is none."""
        values = [t.value for t in self.trials if t.compute <= budget and t.value is not None]
        return max(values) if values else None

    def regret(self, best: float, budget: float) -> float:
        """``best`` minus the best found within ``budget``, in accuracy points; infinite when nothing was found."""
        found = self.best_within(budget)
        return math.inf if found is None else max(0.0, (best - found) * 100)

    def compute_to_reach(self, target: float) -> float:
        """Epochs spent when a complete trial first scored at least ``target``; infinite when none did."""
        for t in self.trials:
            if t.value is not None and t.value >= target:
                return float(t.compute)
        return math.inf


def simulate_search(
    grid: SearchGrid,
    *,
    sampler: str,
    pruner: str,
    seed: int,
    n_trials: int,
    max_compute: float,
    max_trials: int,
    stop: Callable[[SearchTrace], bool] | None = None,
) -> SearchTrace:
    """Replay one search over ``grid``'s cached curves with the runner's sampler and pruner for ``sampler``/``pruner``.

    The space is ``grid.space`` with ``search: {sampler, pruner, seed, n_trials}`` (``n_trials`` sizes TPE's random
    start-up as in a run). The search asks until ``max_compute`` epochs are spent, ``max_trials`` are asked, or
    ``stop(trace)`` says so.
    """
    import optuna
    from optuna.trial import TrialState

    from ..search.runner import make_pruner, make_sampler
    from ..space import parse_space
    from ..train import validates

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(
        {**grid.space, "search": {"sampler": sampler, "pruner": pruner, "seed": seed, "n_trials": n_trials}},
        check_data=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(directions=space.directions, sampler=make_sampler(space), pruner=make_pruner(space))
    single = len(space.directions) == 1
    recorded: dict[tuple[tuple[str, Any], ...], float] = {}  # the runner's reuse of a complete candidate's score
    trace = SearchTrace()
    compute = 0
    while compute < max_compute and len(trace.trials) < max_trials and not (stop is not None and stop(trace)):
        trial = study.ask()
        space.suggest(trial)  # the trial's parameters, drawn exactly as in a run
        key = _params_key(trial.params)
        if key in recorded:
            study.tell(trial, recorded[key])
            trace.trials.append(TraceTrial(dict(trial.params), "reused", 0, recorded[key], compute))
            continue
        curve = grid.point(trial.params).curve
        epochs, pruned = 0, False
        for epoch, value in enumerate(curve, start=1):
            epochs += 1
            if not validates(epoch, len(curve), space.first_val_epoch):
                continue  # a trial validates only the epochs its pruner can act on, and the last
            trial.report(value, epoch)
            if single and trial.should_prune():  # after every epoch, the last one included, as the runner asks
                pruned = True
                break
        compute += epochs
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            trace.trials.append(TraceTrial(dict(trial.params), "pruned", epochs, None, compute))
        else:
            study.tell(trial, curve[-1])
            recorded[key] = curve[-1]
            trace.trials.append(TraceTrial(dict(trial.params), "complete", epochs, curve[-1], compute))
    return trace


# ------------------------------------------------------------------------------------------------ the benchmark


@dataclass
class SearchMethod:
    method: str
    sampler: str
    pruner: str
    regret: dict[str, float]  # budget share ("10%") -> median regret over seeds, accuracy points (inf: none found)
    compute_to_target: float  # median epochs to come within TARGET_POINTS of the grid's best (inf: not reached)
    compute_to_target_share: float  # the same as a share of the grid's compute
    reached: int  # seeds that came within TARGET_POINTS at all
    seeds: int
    per_seed_compute_to_target: list[float] = field(default_factory=list)


@dataclass
class SearchBench:
    """Median regret per budget and compute to the target, per search method, over many seeds.

    Example:
        >>> bench = bench_search(quick=True, seeds=2)  # doctest: +SKIP
        >>> [m.method for m in bench.methods][:2]  # doctest: +SKIP
        ['tpe + median pruning', 'tpe']
    """

    config: dict[str, Any]
    grid: dict[str, Any]  # size, epochs, compute, best score and candidate, seconds, cached
    methods: list[SearchMethod]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows: regret per budget and compute to the target per method, as ``bench search``."""
        g, target = self.grid, self.config["target_points"]
        budgets = list(self.methods[0].regret)
        rows = [
            [
                m.method,
                *(_points(m.regret[b]) for b in budgets),
                _compute_text(m.compute_to_target, m.compute_to_target_share),
                f"{m.reached}/{m.seeds}",
            ]
            for m in self.methods
        ]
        title = (
            f"Search: {g['candidates']} candidates x {g['epochs']} epochs = {g['compute']} epochs of compute; best "
            f"val_acc {g['best_val_acc']:.2%} ({g['best_candidate']}), {g['within_target']} within "
            f"{target} points; median of {self.config['seeds']} seeds"
        )
        columns = [
            "method",
            *(f"regret @{b}" for b in budgets),
            f"compute to within {target} pt",
            "seeds that got there",
        ]
        return title, columns, rows

    def notes(self) -> list[str]:
        """The lines printed after the table: where the grid came from, and how well early epochs predict."""
        g = self.grid
        cached = "read from the cache" if g["cached"] else "trained now"
        correlations = ", ".join("-" if r is None else f"{r:.2f}" for r in g["epoch_final_correlation"])
        return [
            f"grid {cached} ({g['seconds']:.0f} s to train); regret in accuracy points, '-': nothing found yet",
            f"each epoch's score against the final one over the grid (what pruning relies on): r = {correlations}",
        ]


def bench_search(
    *,
    quick: bool = False,
    seeds: int = 20,
    budgets: tuple[float, ...] = BUDGETS,
    n_trials: int | None = None,
    cache: Path | str | None = BENCH_FOLDER / GRID_CACHE,
    threads: int | None = None,
    on_progress: Callable[[int, int, GridPoint], None] | None = None,
    grid: SearchGrid | None = None,
) -> SearchBench:
    """Evaluate (or read) the reference grid, then replay ``seeds`` searches of every method in :data:`METHODS`.

    ``quick`` uses :data:`QUICK_SPACE` (4 candidates) instead of :data:`REFERENCE_SPACE` (64). ``n_trials`` is
    the search's planned size, which sets TPE's random start-up as in a run (default: a quarter of the grid).
    ``grid`` replaces the evaluated grid (a hand-made one, for tests).
    """
    load = load_average()  # before this process adds its own
    cached = True
    if grid is None:
        grid, cached = evaluate_grid(
            QUICK_SPACE if quick else REFERENCE_SPACE, cache=cache, threads=threads, on_progress=on_progress
        )
    size = len(grid.points)
    n_trials = n_trials or max(1, size // 4)
    target = grid.best - TARGET_POINTS / 100
    horizon = max(budgets) * grid.compute

    def done(trace: SearchTrace) -> bool:  # far enough to answer every question asked of it
        return trace.compute >= horizon and math.isfinite(trace.compute_to_reach(target))

    methods = []
    for name, (sampler, pruner) in METHODS.items():
        traces = [
            simulate_search(
                grid,
                sampler=sampler,
                pruner=pruner,
                seed=seed,
                n_trials=n_trials,
                max_compute=grid.compute,
                max_trials=4 * size,
                stop=done,
            )
            for seed in range(seeds)
        ]
        reach = [t.compute_to_reach(target) for t in traces]
        median_reach = _median(reach)
        methods.append(
            SearchMethod(
                method=name,
                sampler=sampler,
                pruner=pruner,
                regret={_share(b): _median([t.regret(grid.best, b * grid.compute) for t in traces]) for b in budgets},
                compute_to_target=median_reach,
                compute_to_target_share=median_reach / grid.compute,
                reached=sum(math.isfinite(r) for r in reach),
                seeds=seeds,
                per_seed_compute_to_target=reach,
            )
        )
    finals = sorted((p.curve[-1] for p in grid.points), reverse=True)
    best = max(grid.points, key=lambda p: p.curve[-1])
    summary = {
        "candidates": size,
        "epochs": grid.epochs,
        "compute": grid.compute,
        "best_val_acc": grid.best,
        "best_candidate": best.placements,
        "median_val_acc": statistics.median(finals),
        "within_target": sum(f >= target for f in finals),  # candidates within TARGET_POINTS of the best
        # how well each epoch's score predicts the final one over the grid: what a pruner relies on
        "epoch_final_correlation": _epoch_correlations(grid),
        "seconds": grid.seconds,
        "cached": cached,
        "torch": grid.torch,
    }
    config = {
        "space": grid.space,
        "seeds": seeds,
        "load_average_before": load,
        "budgets": list(budgets),
        "target_points": TARGET_POINTS,
        "n_trials": n_trials,
        "max_trials": 4 * size,
        "compute_unit": "epochs trained",
    }
    return SearchBench(config, summary, methods)


def _epoch_correlations(grid: SearchGrid) -> list[float | None]:
    """Pearson correlation, over the candidates, of the score after each epoch but the last with the final score."""
    curves = [p.curve for p in grid.points if len(p.curve) == grid.epochs]
    finals = [c[-1] for c in curves]
    found: list[float | None] = []
    for epoch in range(grid.epochs - 1):
        try:
            found.append(statistics.correlation([c[epoch] for c in curves], finals))
        except statistics.StatisticsError:  # fewer than two candidates, or a constant score
            found.append(None)
    return found


def _params_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def _median(values: list[float]) -> float:
    return statistics.median(values)  # infinities sort last: the median is infinite when half never got there


def _share(budget: float) -> str:
    return f"{budget:.0%}"


def _points(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def _compute_text(epochs: float, share: float) -> str:
    return f"{epochs:.0f} epochs ({share:.0%})" if math.isfinite(epochs) else "not reached"
