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

The grid and its cache are :mod:`attnsearch.bench.search_grid`'s, the replayed searches
:mod:`attnsearch.bench.search_replay`'s; this module runs every method over many seeds and sums them up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import BENCH_FOLDER, load_average
from .search_grid import GRID_CACHE, QUICK_SPACE, REFERENCE_SPACE, GridPoint, SearchGrid, evaluate_grid
from .search_replay import SearchTrace, TraceTrial, simulate_search

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

TARGET_POINTS = 0.5  # "within half an accuracy point of the grid's best"
BUDGETS = (0.10, 0.25, 0.50)  # shares of the grid's compute in the table
# name -> (sampler, pruner), as a space file names them
METHODS: dict[str, tuple[str, str]] = {
    "tpe + median pruning": ("tpe", "median"),
    "tpe": ("tpe", "none"),
    "random": ("random", "none"),
    "random + median pruning": ("random", "median"),
}


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


def _median(values: list[float]) -> float:
    return statistics.median(values)  # infinities sort last: the median is infinite when half never got there


def _share(budget: float) -> str:
    return f"{budget:.0%}"


def _points(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def _compute_text(epochs: float, share: float) -> str:
    return f"{epochs:.0f} epochs ({share:.0%})" if math.isfinite(epochs) else "not reached"
