"""Searches replayed on the reference grid of ``attnsearch bench search``, without training anything.

Optuna's own samplers and pruner, configured as ``attnsearch run`` configures them, run in an in-memory study,
seeing the grid's cached scores of the epochs a trial validates (``SearchSpace.first_val_epoch`` on, and the
last), epoch by epoch. As in the runner, a trial whose pruner says stop after an epoch is pruned (even after its
last epoch), and a candidate proposed again reuses its recorded score at no cost. A trace keeps each trial with the
compute spent so far, in epochs trained.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .search_grid import SearchGrid, _params_key

__all__ = ["SearchTrace", "TraceTrial", "simulate_search"]


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

    def pick_within(self, budget: float) -> dict[str, Any] | None:
        """The parameters of the complete trial a search finished within ``budget`` epochs would report as its best:
        the highest score it saw (the earliest of equal ones); None when there is none."""
        pick, seen = None, -math.inf
        for t in self.trials:
            if t.compute > budget:
                break
            if t.value is not None and t.value > seen:
                pick, seen = t.params, t.value
        return pick

    def regret_on(self, truth: Callable[[dict[str, Any]], float], best: float, budget: float) -> float:
        """``best`` minus ``truth`` of the pick within ``budget`` (:meth:`pick_within`), in accuracy points; infinite
        when nothing was found. With ``truth`` the scores the search saw, this is :meth:`regret`."""
        pick = self.pick_within(budget)
        return math.inf if pick is None else max(0.0, (best - truth(pick)) * 100)

    def compute_to_stay(self, truth: Callable[[dict[str, Any]], float], target: float) -> float:
        """Epochs spent when the search's pick (:meth:`pick_within`) came to score at least ``target`` on ``truth``
        and stayed there to the end of the trace; infinite when it did not end there. A new pick can fall below:
        the search chooses on the draw it saw, not on ``truth``."""
        since, pick, seen = math.inf, None, -math.inf
        for t in self.trials:
            if t.value is None or t.value <= seen:
                continue
            pick, seen = t.params, t.value
            if truth(pick) < target:
                since = math.inf
            elif math.isinf(since):
                since = float(t.compute)
        return since

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

    from ..search.study import make_pruner, make_sampler
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
