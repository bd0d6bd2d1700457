"""``attnsearch bench search``: how much compute the search needs to find the best candidate of a space.

A reference space small enough to enumerate (3 slots x 4 modules = 64 candidates on ``shapes``, VGG11-BN at an
eighth of its width) is trained in full under ``grid_seeds`` training seeds (the same data and recipe; seed 0 is
the first grid ever cached), every candidate's validation accuracy after each epoch cached on disk per seed.
Searches are then replayed from the cache: Optuna's own samplers and pruner, configured as ``attnsearch run``
configures them, in an in-memory study, seeing the cached scores of the epochs a trial validates
(``SearchSpace.first_val_epoch`` on, and the last), epoch by epoch. As in the runner, a trial whose pruner says
stop after an epoch is pruned (even after its last epoch), and a candidate proposed again reuses its recorded score
at no cost.

One training is one noisy draw of a candidate's score, so the ground truth is each candidate's final accuracy
averaged over the training seeds (the seed-mean, :mod:`attnsearch.bench.search_truth`, which also measures the
truth's noise and how far two seeds agree). The protocol: replay ``r`` (its Optuna seed) sees the curves of
training seed ``r mod grid_seeds`` only, as a real run sees one training per trial; its pick within a budget is the
complete trial with the highest score it saw, and its regret is the seed-mean best minus the pick's seed-mean, in
accuracy points. Compute is counted in epochs trained: a complete trial costs its epochs, a pruned one the epochs
it ran. Compute to the target is the compute from which the pick's seed-mean stays within ``TARGET_POINTS`` of the
seed-mean best to the end of the replay (which runs to the grid's compute); the draw-seen figures of the first
version (regret against the best of the draw the replay saw) are kept beside them. Medians over replays, and means
with 95% t-intervals, each method against random paired by replay (same seed, same draw).

The grid and its cache are :mod:`attnsearch.bench.search_grid`'s, the replayed searches
:mod:`attnsearch.bench.search_replay`'s; this module runs every method over many seeds and sums them up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import BENCH_FOLDER, load_average
from .search_grid import (
    GRID_CACHE,
    QUICK_SPACE,
    REFERENCE_SPACE,
    GridPoint,
    GridProgress,
    SearchGrid,
    evaluate_grid,
    evaluate_grids,
)
from .search_replay import SearchTrace, TraceTrial, simulate_search
from .search_truth import SeedTruth, effect_text, seed_noise

__all__ = [
    "GRID_SEEDS",
    "METHODS",
    "QUICK_SPACE",
    "REFERENCE_SPACE",
    "GridPoint",
    "GridProgress",
    "SearchBench",
    "SearchGrid",
    "SearchMethod",
    "SearchTrace",
    "SeedTruth",
    "TraceTrial",
    "bench_search",
    "evaluate_grid",
    "evaluate_grids",
    "simulate_search",
]

TARGET_POINTS = 0.5  # "within half an accuracy point of the grid's best"
BUDGETS = (0.10, 0.25, 0.50)  # shares of the grid's compute in the table
GRID_SEEDS = 3  # training seeds of the grid: the ground truth is their mean
BASELINE = "random"  # the method the others are compared with, paired by replay
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
    # budget share ("10%") -> median regret over replays against the seed-mean, accuracy points (inf: none found)
    regret: dict[str, float]
    # budget share -> {mean, low, high}: the mean regret and its 95% t-interval over replays (None: one found none;
    # low and high None: every replay alike, no interval)
    regret_mean: dict[str, dict[str, float | None] | None]
    # budget share -> {mean, low, high}: this method's regret minus random's, paired by replay (None for random)
    regret_vs_random: dict[str, dict[str, float | None] | None]
    compute_to_target: float  # median epochs until the pick stays within TARGET_POINTS of the seed-mean best
    compute_to_target_share: float  # the same as a share of the grid's compute
    reached: int  # replays whose pick ended within TARGET_POINTS of the seed-mean best
    seeds: int
    per_seed_compute_to_target: list[float] = field(default_factory=list)
    training_seeds: list[int] = field(default_factory=list)  # the training seed whose curves each replay saw
    per_seed_regret: dict[str, list[float]] = field(default_factory=dict)  # budget share -> each replay's regret
    # the first version's figures: regret and compute to the target against the best of the draw a replay saw
    regret_seen: dict[str, float] = field(default_factory=dict)
    compute_to_target_seen: float = math.inf


@dataclass
class SearchBench:
    """Regret per budget against the seed-mean and compute to the target, per search method, over many replays;
    the noise of the seed-mean truth.

    Example:
        >>> bench = bench_search(quick=True, seeds=2)  # doctest: +SKIP
        >>> [m.method for m in bench.methods][:2]  # doctest: +SKIP
        ['tpe + median pruning', 'tpe']
    """

    config: dict[str, Any]
    grid: dict[str, Any]  # size, epochs, compute, seed-mean best score and candidate, seconds, cached
    methods: list[SearchMethod]
    truth: dict[str, Any] = field(default_factory=dict)  # seed_noise(), and each candidate's scores and seed-mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows: regret per budget and compute to the target per method, as ``bench search``."""
        g, target = self.grid, self.config["target_points"]
        budgets = list(self.methods[0].regret)
        middle = budgets[len(budgets) // 2]
        rows = [
            [
                m.method,
                *(_points(m.regret[b]) for b in budgets),
                _interval(m.regret_mean[middle]),
                "-" if m.method == BASELINE else _interval(m.regret_vs_random[middle], signed=True),
                _compute_text(m.compute_to_target, m.compute_to_target_share),
                f"{m.reached}/{m.seeds}",
            ]
            for m in self.methods
        ]
        title = (
            f"Search: {g['candidates']} candidates x {g['epochs']} epochs = {g['compute']} epochs of compute per "
            f"draw, {g['training_seeds']} training seed(s); best seed-mean val_acc {g['best_val_acc']:.2%} "
            f"({g['best_candidate']}), {g['within_target']} within {target} points; "
            f"median of {self.config['seeds']} replays"
        )
        columns = [
            "method",
            *(f"regret @{b}" for b in budgets),
            f"mean @{middle} [95% CI]",
            f"vs {BASELINE} @{middle}",
            f"compute to within {target} pt",
            "replays that got there",
        ]
        return title, columns, rows

    def notes(self) -> list[str]:
        """The lines after the table: the protocol, the noise of the truth, the draw-seen figures, the grid."""
        g, t = self.grid, self.truth
        k = g["training_seeds"]
        cached = ", ".join(
            f"seed {i} {'read from the cache' if c else 'trained now'} ({s:.0f} s)"
            for i, (c, s) in enumerate(zip(g["cached"], g["seconds"], strict=True))
        )
        lines = [
            f"regret in accuracy points below the best seed-mean ({k} training seeds), '-': nothing found yet; "
            f"replay r saw training seed r mod {k}'s curves and picked the best score it saw",
        ]
        if t.get("sd_points") is not None:
            sd = t["sd_points"]
            lines.append(
                f"noise of the truth: seed-to-seed SD of a candidate's score {sd['mean']:.2f} pt on average, "
                f"{sd['max']:.2f} at most ({sd['max_candidate']}); standard error of a seed-mean "
                f"{t['se_of_mean_points']:.2f} pt{effect_text(t.get('candidate_effect'))}"
            )
            means = ", ".join(f"{m:.2f}%" for m in t["grid_mean_points"])
            lines.append(
                f"each seed's mean over the grid: {means}; with it taken off (a seed that moves every candidate "
                f"alike reorders none), the SD is {t['centred_sd_points']['mean']:.2f} pt on average, "
                f"{t['centred_sd_points']['max']:.2f} at most"
            )
            for pair in t["pairs"]:
                i, j = pair["seeds"]
                lines.append(
                    f"seeds {i} and {j}: Kendall {pair['kendall']:.2f} (p = {pair['kendall_p']:.2g}), Spearman "
                    f"{pair['spearman']:.2f} (p = {pair['spearman_p']:.2g}), "
                    f"|difference| {pair['mean_abs_difference_points']:.2f} pt "
                    f"on average; {i}'s best ranks {pair['best_rank'][0]} under {j}, {j}'s best ranks "
                    f"{pair['best_rank'][1]} under {i}; top-3 overlap {pair['top3_overlap']}/3"
                )
            lines.append(
                f"the best under one seed is the best under another in {t['same_best']} of {t['pairs_total']} pairs; "
                f"top-3 overlap {t['top3_overlap_mean']:.2f}/3 on average"
            )
        exhaustive = ", ".join(f"seed {b['seed']} {b['regret_points']:.2f}" for b in t.get("best_per_seed", []))
        lines.append(
            f"each seed's own best, measured on the seed-mean (an exhaustive search of one draw): {exhaustive}"
        )
        for m in self.methods:
            seen = ", ".join(f"@{b} {_points(v)}" for b, v in m.regret_seen.items())
            reach = _compute_text(m.compute_to_target_seen, m.compute_to_target_seen / g["compute"])
            lines.append(
                f"{m.method}, against the best of the draw it saw: regret {seen}; compute to within "
                f"{self.config['target_points']} pt {reach}"
            )
        correlations = ", ".join("-" if r is None else f"{r:.2f}" for r in g["epoch_final_correlation"])
        lines.append(f"grid: {cached}")
        lines.append(
            f"each epoch's score against the final one over every draw of the grid (what pruning relies on): "
            f"r = {correlations}"
        )
        return lines


def bench_search(
    *,
    quick: bool = False,
    seeds: int = 20,
    grid_seeds: int = GRID_SEEDS,
    budgets: tuple[float, ...] = BUDGETS,
    n_trials: int | None = None,
    cache: Path | str | None = BENCH_FOLDER / GRID_CACHE,
    threads: int | None = None,
    on_progress: Callable[[GridProgress], None] | None = None,
    grids: Sequence[SearchGrid] | None = None,
) -> SearchBench:
    """Evaluate (or read) the reference grid under ``grid_seeds`` training seeds, then replay ``seeds`` searches of
    every method in :data:`METHODS`, judged on the seed-mean (the protocol is the module's docstring).

    ``quick`` uses :data:`QUICK_SPACE` (4 candidates) instead of :data:`REFERENCE_SPACE` (64). ``n_trials`` is
    the search's planned size, which sets TPE's random start-up as in a run (default: a quarter of the grid).
    ``grids`` replaces the evaluated grids, one per training seed (hand-made ones, for tests).

    Raises:
        ValueError: ``grid_seeds`` below 1, or ``grids`` empty or holding different candidates.
    """
    load = load_average()  # before this process adds its own
    if grids is None:
        evaluated = evaluate_grids(
            QUICK_SPACE if quick else REFERENCE_SPACE, grid_seeds, cache=cache, threads=threads, on_progress=on_progress
        )
        grids = [grid for grid, _ in evaluated]
        cached = [was for _, was in evaluated]
    else:
        grids, cached = list(grids), [True] * len(grids)
    truth = SeedTruth.from_grids(grids)
    first = grids[0]
    size = len(first.points)
    n_trials = n_trials or max(1, size // 4)
    target = truth.best - TARGET_POINTS / 100
    traces = {
        name: [
            simulate_search(
                grids[seed % len(grids)],
                sampler=sampler,
                pruner=pruner,
                seed=seed,
                n_trials=n_trials,
                max_compute=first.compute,  # to the end: a later pick may fall out of the target again
                max_trials=4 * size,
            )
            for seed in range(seeds)
        ]
        for name, (sampler, pruner) in METHODS.items()
    }
    regrets = {
        name: {_share(b): [t.regret_on(truth.value, truth.best, b * first.compute) for t in runs] for b in budgets}
        for name, runs in traces.items()
    }
    methods = []
    for name, (sampler, pruner) in METHODS.items():
        runs = traces[name]
        seen = [grids[seed % len(grids)] for seed in range(seeds)]
        reach = [t.compute_to_stay(truth.value, target) for t in runs]
        reach_seen = [t.compute_to_reach(g.best - TARGET_POINTS / 100) for t, g in zip(runs, seen, strict=True)]
        methods.append(
            SearchMethod(
                method=name,
                sampler=sampler,
                pruner=pruner,
                regret={b: _median(r) for b, r in regrets[name].items()},
                regret_mean={b: _mean_interval(r) for b, r in regrets[name].items()},
                regret_vs_random={
                    b: None if name == BASELINE else _paired(r, regrets[BASELINE][b]) for b, r in regrets[name].items()
                },
                compute_to_target=_median(reach),
                compute_to_target_share=_median(reach) / first.compute,
                reached=sum(math.isfinite(r) for r in reach),
                seeds=seeds,
                per_seed_compute_to_target=reach,
                training_seeds=[seed % len(grids) for seed in range(seeds)],
                per_seed_regret=regrets[name],
                regret_seen={
                    _share(b): _median([t.regret(g.best, b * first.compute) for t, g in zip(runs, seen, strict=True)])
                    for b in budgets
                },
                compute_to_target_seen=_median(reach_seen),
            )
        )
    mean = truth.mean
    summary = {
        "candidates": size,
        "epochs": first.epochs,
        "compute": first.compute,
        "training_seeds": len(grids),
        "best_val_acc": truth.best,  # the seed-mean's
        "best_candidate": truth.placements[truth.best_index],
        "best_val_acc_per_seed": [grid.best for grid in grids],
        "median_val_acc": statistics.median(mean),
        "within_target": sum(m >= target for m in mean),  # candidates within TARGET_POINTS of the best seed-mean
        # how well each epoch's score predicts the final one over every draw: what a pruner relies on
        "epoch_final_correlation": _epoch_correlations(grids),
        "seconds": [grid.seconds for grid in grids],
        "cached": cached,
        "torch": first.torch,
        "machine": [grid.machine for grid in grids],
    }
    ranked = sorted(range(size), key=lambda i: -mean[i])
    candidates = [
        {"candidate": truth.placements[i], "val_acc": [f[i] for f in truth.finals], "seed_mean": mean[i]}
        for i in ranked
    ]
    config = {
        "space": first.space,
        "seeds": seeds,
        "grid_seeds": len(grids),
        "truth": "seed-mean: each candidate's final val_acc averaged over the grid's training seeds",
        "protocol": f"replay r (Optuna seed r) sees training seed r mod {len(grids)}; its pick is the best score it "
        "saw; regret = best seed-mean - the pick's seed-mean",
        "load_average_before": load,
        "budgets": list(budgets),
        "target_points": TARGET_POINTS,
        "n_trials": n_trials,
        "max_trials": 4 * size,
        "compute_unit": "epochs trained",
    }
    return SearchBench(config, summary, methods, {**seed_noise(truth), "candidates": candidates})


def _mean_interval(values: list[float]) -> dict[str, float | None] | None:
    """The mean and its 95% t-interval (``k - 1`` df); None with an infinity or fewer than two values. Equal values
    (every replay found the best, say) give no interval, low and high None: a spread of zero is no certainty."""
    from ..stats import mean_estimate

    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return None
    estimate = mean_estimate(values)
    if estimate is None:
        return {"mean": statistics.fmean(values), "low": None, "high": None}
    low, high = estimate.interval()
    return {"mean": estimate.mean, "low": low, "high": high}


def _paired(values: list[float], baseline: list[float]) -> dict[str, float | None] | None:
    """``values - baseline`` paired by replay: the mean difference and its 95% t-interval (None as above)."""
    return _mean_interval([a - b for a, b in zip(values, baseline, strict=True)])


def _epoch_correlations(grids: Sequence[SearchGrid]) -> list[float | None]:
    """Pearson correlation, over every draw of every candidate, of the score after each epoch but the last with the
    final score."""
    epochs = grids[0].epochs
    curves = [p.curve for grid in grids for p in grid.points if len(p.curve) == epochs]
    finals = [c[-1] for c in curves]
    found: list[float | None] = []
    for epoch in range(epochs - 1):
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


def _interval(value: dict[str, float | None] | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if value["low"] is None or value["high"] is None:
        return f"{value['mean']:{sign}.2f} (all equal)"
    return f"{value['mean']:{sign}.2f} [{value['low']:{sign}.2f}, {value['high']:{sign}.2f}]"
