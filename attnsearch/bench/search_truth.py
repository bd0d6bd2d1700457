"""The ground truth of ``attnsearch bench search``: the reference grid trained under several training seeds.

One training of a candidate is one noisy draw of its score: the same recipe and data under another training seed
(initial weights, batch order) can land points away. The truth a search is judged against is therefore each
candidate's final validation accuracy averaged over the training seeds (the *seed-mean*), and this module says how
noisy that truth is:

- per candidate, the seed-to-seed standard deviation of its final score (sample SD, ``k - 1``), its mean and
  maximum over the grid, and the standard error of a seed-mean (SD / sqrt(k));
- each seed's mean over the grid, and the same SD with each seed's grid mean taken off first: a training seed
  sets the backbone's initial weights and the batch order of every candidate alike, so a seed can lift or lower
  them all, which moves no ranking; the centred SD is the part of the noise that can reorder candidates;
- for every pair of seeds, Kendall's tau-b and Spearman's rho between the two draws of the grid, with their
  p-values (``scipy.stats.kendalltau``, ``scipy.stats.spearmanr``: the null hypothesis is no association);
- how often the grid's best under one seed is its best under another (a candidate at the top of both, equal
  top scores all counted as best), the rank one seed's best takes under the other (1 + the candidates scoring
  strictly higher; the best rank among equal tops), and the overlap of the two top-3 sets (the three highest,
  equal scores taken in the grid's order);
- for each seed, the regret on the seed-mean of that seed's own best (the mean over equal tops): what even an
  exhaustive search of one draw loses against the truth;
- whether the candidates differ at all beyond the training-seed noise: a two-way analysis of variance without
  replication, candidates x seeds with the seeds as blocks (F = (SS_candidates / (n - 1)) / (SS_error / ((n - 1)
  (k - 1))), its p-value from the F distribution, ``scipy.stats.f``). A large p says the grid has no best
  candidate a search could find at this budget.

All differences are in accuracy points (percentage points).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .search_grid import SearchGrid, _params_key

__all__ = ["SeedTruth", "seed_noise"]

TOP = 3  # the size of the top sets compared between seeds


@dataclass(frozen=True)
class SeedTruth:
    """Each candidate's final score under every training seed, and their mean: the ground truth of the benchmark.

    Example:
        >>> from attnsearch.bench.search_grid import GridPoint, QUICK_SPACE
        >>> a = SearchGrid(QUICK_SPACE, [GridPoint({"s": "x"}, (0.5, 0.7)), GridPoint({"s": "y"}, (0.5, 0.6))])
        >>> b = SearchGrid(QUICK_SPACE, [GridPoint({"s": "y"}, (0.5, 0.9)), GridPoint({"s": "x"}, (0.5, 0.8))])
        >>> truth = SeedTruth.from_grids([a, b])
        >>> [round(m, 2) for m in truth.mean], round(truth.best, 2), round(truth.value({"s": "x"}), 2)
        ([0.75, 0.75], 0.75, 0.75)
    """

    params: tuple[dict[str, Any], ...]  # the candidates, in the first grid's order
    placements: tuple[str, ...]
    finals: tuple[tuple[float, ...], ...]  # [seed][candidate]: final validation accuracy, 0..1

    @classmethod
    def from_grids(cls, grids: Sequence[SearchGrid]) -> SeedTruth:
        """The truth of one grid per training seed (the same candidates in each, in any order).

        Raises:
            ValueError: no grid, or grids whose candidates differ.
        """
        if not grids:
            raise ValueError("the ground truth needs at least one grid")
        first = grids[0].points
        keys = [_params_key(p.params) for p in first]
        for grid in grids[1:]:
            if sorted(_params_key(p.params) for p in grid.points) != sorted(keys):
                raise ValueError("the grids of the training seeds hold different candidates")
        finals = tuple(tuple(grid.point(p.params).curve[-1] for p in first) for grid in grids)
        return cls(tuple(p.params for p in first), tuple(p.placements for p in first), finals)

    @property
    def seeds(self) -> int:
        return len(self.finals)

    @cached_property
    def mean(self) -> list[float]:
        """The seed-mean final score of each candidate."""
        return [statistics.fmean(scores) for scores in zip(*self.finals, strict=True)]

    @property
    def best(self) -> float:
        return max(self.mean)

    @property
    def best_index(self) -> int:
        """The candidate with the highest seed-mean (the first in grid order among equals)."""
        mean = self.mean
        return mean.index(max(mean))

    def value(self, params: dict[str, Any]) -> float:
        """The seed-mean final score of the candidate with these Optuna parameters."""
        return self.mean[self._index[_params_key(params)]]

    @cached_property
    def _index(self) -> dict[tuple[tuple[str, Any], ...], int]:
        return {_params_key(p): i for i, p in enumerate(self.params)}


def seed_noise(truth: SeedTruth) -> dict[str, Any]:
    """How noisy the seed-mean truth is, and how much two training seeds agree (the module's docstring lists it).

    Keys: ``training_seeds``; ``grid_mean_points`` (per seed); ``sd_points`` (``mean``, ``max``,
    ``max_candidate``), ``se_of_mean_points`` and ``centred_sd_points`` (as ``sd_points``; all three None with one
    seed); ``pairs`` (per pair of seeds: ``seeds``, ``kendall``, ``kendall_p``, ``spearman``,
    ``spearman_p``, ``mean_abs_difference_points``, ``same_best``, ``best_rank`` (i's best ranked under j, j's
    under i), ``top3_overlap``); ``same_best`` (pairs whose bests agree), ``pairs_total``, ``top3_overlap_mean``,
    ``kendall_mean``, ``spearman_mean`` (None without pairs); ``best_per_seed`` (per seed: its best
    ``candidates`` (more than one where equal), their score there, their seed-means, ``regret_points`` on the
    seed-mean, ``is_seed_mean_best``).

    Example:
        >>> truth = SeedTruth(({"s": 1}, {"s": 2}, {"s": 3}), ("a", "b", "c"), ((0.5, 0.6, 0.7), (0.5, 0.7, 0.6)))
        >>> noise = seed_noise(truth)
        >>> noise["same_best"], noise["pairs"][0]["best_rank"], noise["best_per_seed"][0]["regret_points"]
        (0, [2, 2], 0.0)
    """
    from scipy import stats

    k = truth.seeds
    mean = truth.mean
    grid_means = [statistics.fmean(scores) for scores in truth.finals]
    summary: dict[str, Any] = {
        "training_seeds": k,
        "grid_mean_points": [m * 100 for m in grid_means],  # each seed's mean over the candidates
        "sd_points": None,
        "se_of_mean_points": None,
        "centred_sd_points": None,
    }
    if k >= 2:
        sds = [statistics.stdev(scores) * 100 for scores in zip(*truth.finals, strict=True)]
        summary["sd_points"] = _spread(sds, truth.placements)
        summary["se_of_mean_points"] = statistics.fmean(sds) / math.sqrt(k)
        centred = [
            statistics.stdev(x - m for x, m in zip(scores, grid_means, strict=True)) * 100
            for scores in zip(*truth.finals, strict=True)
        ]
        summary["centred_sd_points"] = _spread(centred, truth.placements)
    summary["candidate_effect"] = candidate_effect(truth.finals) if k >= 2 else None
    pairs = []
    for i, j in itertools.combinations(range(k), 2):
        a, b = truth.finals[i], truth.finals[j]
        tau = stats.kendalltau(a, b)
        rho = stats.spearmanr(a, b)
        pairs.append(
            {
                "seeds": [i, j],
                "kendall": float(tau.statistic),
                "kendall_p": float(tau.pvalue),
                "spearman": float(rho.statistic),
                "spearman_p": float(rho.pvalue),
                "mean_abs_difference_points": statistics.fmean(abs(x - y) * 100 for x, y in zip(a, b, strict=True)),
                "same_best": bool(_tops(a) & _tops(b)),
                "best_rank": [min(_rank(b, c) for c in _tops(a)), min(_rank(a, c) for c in _tops(b))],
                "top3_overlap": len(_top(a, TOP) & _top(b, TOP)),
            }
        )
    summary["pairs"] = pairs
    summary["pairs_total"] = len(pairs)
    summary["same_best"] = sum(p["same_best"] for p in pairs)
    for field in ("top3_overlap", "kendall", "spearman"):
        summary[f"{field}_mean"] = statistics.fmean(p[field] for p in pairs) if pairs else None
    summary["best_per_seed"] = [
        {
            "seed": s,
            "candidates": [truth.placements[i] for i in sorted(_tops(scores))],
            "val_acc": max(scores),
            "seed_mean": [mean[i] for i in sorted(_tops(scores))],
            # expected under a random choice among equal tops
            "regret_points": statistics.fmean((truth.best - mean[i]) * 100 for i in _tops(scores)),
            "is_seed_mean_best": any(mean[i] == truth.best for i in _tops(scores)),
        }
        for s, scores in enumerate(truth.finals)
    ]
    return summary


def candidate_effect(finals: Sequence[Sequence[float]]) -> dict[str, float] | None:
    """Do the candidates differ beyond the seed noise? Two-way ANOVA without replication, seeds as blocks.

    ``finals[s][c]`` is candidate c's score under seed s. Returns ``f``, ``df_candidates`` (n - 1), ``df_error``
    ((n - 1)(k - 1)) and ``p`` (the F distribution's upper tail, ``scipy.stats.f.sf``); None when the error sum of
    squares is 0 (every score explained by a candidate and a seed effect: no noise to test against).

    Example:
        >>> effect = candidate_effect([[0.70, 0.80, 0.60], [0.72, 0.79, 0.61]])
        >>> round(effect["f"], 1), effect["df_candidates"], effect["df_error"], round(effect["p"], 4)
        (155.3, 2, 2, 0.0064)
    """
    from scipy import stats

    k, n = len(finals), len(finals[0])
    grand = statistics.fmean(x for scores in finals for x in scores)
    candidate_means = [statistics.fmean(column) for column in zip(*finals, strict=True)]
    seed_means = [statistics.fmean(scores) for scores in finals]
    ss_candidates = k * sum((m - grand) ** 2 for m in candidate_means)
    ss_seeds = n * sum((m - grand) ** 2 for m in seed_means)
    ss_total = sum((x - grand) ** 2 for scores in finals for x in scores)
    ss_error = ss_total - ss_candidates - ss_seeds
    df_candidates, df_error = n - 1, (n - 1) * (k - 1)
    if df_error == 0 or ss_error <= 1e-12 * max(ss_total, 1e-300):
        return None
    f = (ss_candidates / df_candidates) / (ss_error / df_error)
    p = float(stats.f.sf(f, df_candidates, df_error))
    return {"f": f, "df_candidates": df_candidates, "df_error": df_error, "p": p}


def effect_text(effect: dict[str, float] | None) -> str:
    """``candidate_effect`` as the bench writes it after the noise of the truth ("" when there is none)."""
    if effect is None:
        return ""
    return (
        f"; candidates against that noise (two-way ANOVA, seeds as blocks): F({effect['df_candidates']}, "
        f"{effect['df_error']}) = {effect['f']:.2f}, p = {effect['p']:.2g}"
    )


def _spread(sds: list[float], names: Sequence[str]) -> dict[str, Any]:
    worst = max(range(len(sds)), key=sds.__getitem__)
    return {"mean": statistics.fmean(sds), "max": sds[worst], "max_candidate": names[worst]}


def _tops(scores: Sequence[float]) -> set[int]:
    """Every candidate at the top score (more than one where they tie)."""
    top = max(scores)
    return {i for i, s in enumerate(scores) if s == top}


def _rank(scores: Sequence[float], index: int) -> int:
    """1 + the candidates scoring strictly higher than ``index``."""
    return 1 + sum(s > scores[index] for s in scores)


def _top(scores: Sequence[float], n: int) -> set[int]:
    """The ``n`` highest, equal scores taken in the grid's order."""
    return set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n])
