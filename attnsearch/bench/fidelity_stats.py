"""The figures of ``attnsearch bench fidelity``: how well one budget's ranking of placements predicts another's,
how noisy a ranking is at one budget, and how many seeds separate an effect of a given size.

All of it rests on ``scipy.stats`` (through :mod:`attnsearch.stats` where that has the function):

- :func:`rank_agreement`: Spearman's rho and Kendall's tau-b of two score lists, each with scipy's two-sided
  p-value (no association) and a 95% percentile bootstrap interval over the placements (resampled with
  replacement, pairs kept together; a resample whose scores are all equal has no correlation and is left out);
- :func:`top_overlap`: how many of one list's top k are among the other's top k, and what chance alone gives;
- :func:`paired_sd`: the seed-to-seed standard deviation of the difference between two placements trained with
  the same seed, pooled over every pair of placements;
- :func:`paired_power` and :func:`seeds_needed`: the power of a two-sided paired t-test and the smallest number of
  seeds that reaches a target power, solved exactly with the noncentral t distribution (``scipy.stats.nct``).

Scores are in accuracy points (0..100) here; the benchmark converts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from ..stats import CONFIDENCE, kendall, spearman

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "EFFECTS",
    "analyse",
    "paired_power",
    "paired_sd",
    "rank_agreement",
    "sd_interval",
    "seeds_needed",
    "top_overlap",
    "top_set",
]

BOOTSTRAP_RESAMPLES = 2000
MOST_SEEDS = 1_000_000  # seeds_needed gives up (None) beyond this


def rank_agreement(
    x: Sequence[float], y: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Spearman's and Kendall's correlation of ``x`` and ``y`` (two scores per placement, same order), each as
    ``{"statistic", "p_value", "interval"}``, plus ``"n"``. NaN (null in the JSON) where a list is constant; the
    interval is None where fewer than half the resamples had a correlation.

    Raises:
        ValueError: lists of different lengths or shorter than 3.

    Example:
        >>> r = rank_agreement([70.0, 72.0, 75.0, 71.0, 78.0], [80.0, 83.0, 82.0, 81.0, 85.0])
        >>> r["n"], round(r["spearman"]["statistic"], 2), round(r["kendall"]["statistic"], 2)
        (5, 0.9, 0.8)
        >>> low, high = r["spearman"]["interval"]
        >>> -1.0 <= low <= 0.9 <= high <= 1.0
        True
    """
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"rank agreement needs two equally long lists of 3 or more scores, got {len(x)} and {len(y)}")
    import numpy as np
    from scipy import stats

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(xs), size=(resamples, len(xs)))
    boot_x, boot_y = xs[draws], ys[draws]
    varied = (np.ptp(boot_x, axis=1) > 0) & (np.ptp(boot_y, axis=1) > 0)  # a constant resample has no correlation
    tests = {
        "spearman": (spearman, stats.spearmanr, _spearman_rows),
        "kendall": (kendall, stats.kendalltau, _kendall_rows),
    }
    out: dict[str, Any] = {"n": len(xs)}
    for name, (statistic, test, rows) in tests.items():
        value = statistic(xs, ys)
        p = float(test(xs, ys).pvalue) if not math.isnan(value) else math.nan
        interval = None
        if varied.sum() >= resamples / 2:
            tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
            low, high = np.percentile(rows(boot_x[varied], boot_y[varied]), [tail, 100.0 - tail])
            interval = [float(low), float(high)]
        out[name] = {"statistic": value, "p_value": p, "interval": interval}
    return out


def _spearman_rows(x: Any, y: Any) -> Any:
    """Spearman's rho of each row pair of (R, n) arrays at once: Pearson's r of average ranks (what
    ``scipy.stats.spearmanr`` computes for one pair).

    Example:
        >>> import numpy as np
        >>> x, y = np.array([[1.0, 2, 2, 4, 3]]), np.array([[2.0, 1, 3, 5, 5]])
        >>> bool(np.isclose(_spearman_rows(x, y)[0], spearman(x[0], y[0])))
        True
    """
    from scipy import stats

    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / (((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1)) ** 0.5)


def _kendall_rows(x: Any, y: Any) -> Any:
    """Kendall's tau-b of each row pair of (R, n) arrays at once: the sum over pairs i < j of
    sign(x_i - x_j) sign(y_i - y_j), over the square root of (pairs not tied in x) (pairs not tied in y), as
    ``scipy.stats.kendalltau`` computes for one pair.

    Example:
        >>> import numpy as np
        >>> x, y = np.array([[1.0, 2, 2, 4, 3]]), np.array([[2.0, 1, 3, 5, 5]])
        >>> bool(np.isclose(_kendall_rows(x, y)[0], kendall(x[0], y[0])))
        True
    """
    import numpy as np

    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    return (sx * sy).sum(axis=1) / ((np.abs(sx).sum(axis=1) * np.abs(sy).sum(axis=1)) ** 0.5)


def top_set(scores: Sequence[float], k: int) -> list[int]:
    """The indices of the ``k`` highest scores, highest first (an earlier index first among equal scores).

    Example:
        >>> top_set([0.7, 0.9, 0.8, 0.9], 3)
        [1, 3, 2]
    """
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def top_overlap(x: Sequence[float], y: Sequence[float], k: int) -> dict[str, Any]:
    """How many of ``x``'s top ``k`` placements are among ``y``'s top ``k``; ``chance``: the overlap two random
    orders give on average (k * k / n: each of one list's k has a k / n chance to be in the other's).

    Example:
        >>> top_overlap([1, 2, 3, 4, 5, 6], [1, 2, 6, 4, 3, 5], 3)
        {'k': 3, 'x_top': [5, 4, 3], 'y_top': [2, 5, 3], 'overlap': 2, 'chance': 1.5}
        >>> top_overlap([1, 2, 3, 4], [4, 3, 2, 1], 1)["overlap"]
        0
    """
    if not 1 <= k <= len(x) or len(x) != len(y):
        raise ValueError(f"top {k} needs two equally long lists of at least {k} scores")
    a, b = top_set(x, k), top_set(y, k)
    return {"k": k, "x_top": a, "y_top": b, "overlap": len(set(a) & set(b)), "chance": k * k / len(x)}


def paired_sd(scores: Sequence[Sequence[float]]) -> tuple[float, int] | None:
    """The standard deviation of a paired difference between two placements trained with one seed, pooled over
    every pair: ``scores[p][s]`` is placement p's score with seed s. Returns ``(sd, df)``, or None with fewer
    than two placements or two seeds.

    For each pair (i, j) the differences ``scores[i][s] - scores[j][s]`` over the seeds have a sample variance;
    the pooled variance is their mean over all pairs. It equals twice the residual mean square of the
    placement + seed two-way layout (what a seed shifts in every placement alike cancels in a paired difference),
    so its degrees of freedom are ``(P - 1) (S - 1)``.

    Example:
        >>> sd, df = paired_sd([[70.0, 71.0], [72.0, 74.0], [75.0, 75.0]])
        >>> round(sd, 4), df
        (1.0, 2)
    """
    if len(scores) < 2 or len(scores[0]) < 2:
        return None
    seeds = len(scores[0])
    if any(len(row) != seeds for row in scores):
        raise ValueError("every placement needs a score for every seed")
    variances = [
        statistics.variance([a - b for a, b in zip(ri, rj, strict=True)]) for ri, rj in combinations(scores, 2)
    ]
    return math.sqrt(statistics.fmean(variances)), (len(scores) - 1) * (seeds - 1)


def sd_interval(sd: float, df: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The chi-square interval of a standard deviation estimated with ``df`` degrees of freedom.

    Example:
        >>> low, high = sd_interval(1.0, 10)
        >>> round(low, 3), round(high, 3)
        (0.699, 1.755)
    """
    from scipy import stats

    tail = (1.0 - confidence) / 2.0
    return (
        sd * math.sqrt(df / float(stats.chi2.ppf(1.0 - tail, df))),
        sd * math.sqrt(df / float(stats.chi2.ppf(tail, df))),
    )


def paired_power(n: int, effect: float, sd: float, *, alpha: float = 0.05) -> float:
    """The power of a two-sided paired t-test at level ``alpha`` with ``n`` pairs, when the true mean difference
    is ``effect`` and one difference's standard deviation is ``sd`` (same units): the chance that
    ``|t| > t(1 - alpha / 2, n - 1)`` when t follows the noncentral t distribution with ``n - 1`` degrees of
    freedom and noncentrality ``effect / sd * sqrt(n)`` (``scipy.stats.nct``).

    Raises:
        ValueError: n < 2, effect <= 0 or sd < 0.

    Example:
        >>> round(paired_power(10, 1.0, 1.0), 4), round(paired_power(9, 1.0, 1.0), 4)
        (0.8031, 0.748)
    """
    if n < 2 or not effect > 0 or sd < 0:
        raise ValueError(f"paired power needs n >= 2, effect > 0 and sd >= 0, got {n}, {effect}, {sd}")
    if sd == 0:
        return 1.0
    from scipy import stats

    df = n - 1
    critical = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    shift = effect / sd * math.sqrt(n)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(effect: float, sd: float, *, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """The smallest number of seeds (pairs) n >= 2 at which a two-sided paired t-test at level ``alpha`` detects a
    true difference ``effect`` with at least ``power``, one difference's standard deviation being ``sd``.

    Solved exactly with :func:`paired_power` (the noncentral t), starting from the normal approximation
    ``n ~ ((z(1 - alpha/2) + z(power)) sd / effect)^2`` (which gives 8 for effect = sd, where the t-test needs
    10) and stepping one seed at a time to the first n that reaches ``power`` after one that does not. Near that
    n the noncentrality stays about z(1 - alpha/2) + z(power), where scipy's noncentral t is accurate (far above,
    at noncentralities of tens, it returns NaN). None beyond a million seeds.

    Raises:
        ValueError: effect <= 0, sd < 0, or power not in (0, 1).

    Example:
        >>> seeds_needed(1.0, 1.0), seeds_needed(0.5, 1.0), seeds_needed(1.0, 0.1)  # 2 seeds: t(0.975, 1) = 12.7
        (10, 34, 3)
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    if not effect > 0 or sd < 0:
        raise ValueError(f"seeds needed needs effect > 0 and sd >= 0, got {effect}, {sd}")
    if sd == 0:
        return 2
    from scipy import stats

    z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
    guess = (z * sd / effect) ** 2
    if guess > MOST_SEEDS:
        return None
    n = max(2, math.ceil(guess))
    while n > 2 and paired_power(n - 1, effect, sd, alpha=alpha) >= power:
        n -= 1
    while paired_power(n, effect, sd, alpha=alpha) < power:
        n += 1
        if n > MOST_SEEDS:
            return None
    return n


BUDGETS = ("brief", "long")
EFFECTS = (0.5, 1.0)  # accuracy points the seeds-needed figures are for


def analyse(
    placements: Sequence[dict[str, Any]], seeds: Sequence[int], *, val_images: int | None = None
) -> dict[str, Any]:
    """The figures of ``bench fidelity`` from its placements (each ``{"placement": label, "brief": {"val_acc",
    "per_seed"}, "long": {...}}``, accuracies 0..1, ``per_seed`` in the order of ``seeds``, each scored on
    ``val_images`` images); differences and standard deviations in accuracy points.

    - ``fidelity``: :func:`rank_agreement` of the brief and long seed-means, ``top1`` and ``top3``
      (:func:`top_overlap`, with placement labels);
    - ``noise_ceiling``: per budget, :func:`rank_agreement` of every two seeds' scores;
    - ``leader``: per budget, the best seed-mean against the runner-up: the mean paired difference and its 95%
      t-interval over the seeds (:func:`attnsearch.stats.paired_interval`), never narrower than the two scores'
      binomial noise on ``val_images`` (:func:`attnsearch.stats.accuracy_se`, as the confirmation race does).
      Both were picked by the same scores, so the difference is biased upwards: "separated" is the most it can
      say;
    - ``seeds_needed``: per budget, :func:`paired_sd` with its :func:`sd_interval`, and :func:`seeds_needed` for
      each of :data:`EFFECTS` at the estimate and at both ends of its interval; None where no spread was measured
      (every paired difference equal between seeds: nothing to size the seeds from);
    - ``grid_mean``: per budget, the mean score over the grid (0..1).

    Example:
        >>> rows = [(0.7, 0.72, 0.8, 0.81), (0.74, 0.73, 0.83, 0.82), (0.71, 0.7, 0.84, 0.86), (0.68, 0.69, 0.79, 0.8)]
        >>> grid = [{"placement": f"p{i}", "brief": {"val_acc": (a + b) / 2, "per_seed": [a, b]},
        ...          "long": {"val_acc": (c + d) / 2, "per_seed": [c, d]}} for i, (a, b, c, d) in enumerate(rows)]
        >>> f = analyse(grid, [0, 1])
        >>> round(f["fidelity"]["spearman"]["statistic"], 6), f["fidelity"]["top1"]["brief_top"]
        (0.4, ['p1'])
        >>> f["fidelity"]["top1"]["long_top"], f["leader"]["long"]["separated"]
        (['p2'], False)
        >>> f["seeds_needed"]["long"]["df"], [e["seeds"] for e in f["seeds_needed"]["long"]["effects"]]
        (3, [52, 15])
    """
    from ..stats import accuracy_se, paired_interval

    labels = [p["placement"] for p in placements]
    means = {b: [100.0 * p[b]["val_acc"] for p in placements] for b in BUDGETS}
    rows = {b: [[100.0 * a for a in p[b]["per_seed"]] for p in placements] for b in BUDGETS}
    fidelity = rank_agreement(means["brief"], means["long"])
    for k in (1, 3):
        top = top_overlap(means["brief"], means["long"], min(k, len(labels)))
        fidelity[f"top{k}"] = {
            "brief_top": [labels[i] for i in top["x_top"]],
            "long_top": [labels[i] for i in top["y_top"]],
            "overlap": top["overlap"],
            "chance": top["chance"],
        }
    ceiling = {
        b: [
            {"seeds": [seeds[i], seeds[j]], **rank_agreement([r[i] for r in rows[b]], [r[j] for r in rows[b]])}
            for i, j in combinations(range(len(seeds)), 2)
        ]
        for b in BUDGETS
    }
    leader: dict[str, Any] = {}
    needed: dict[str, Any] = {}
    for b in BUDGETS:
        best, runner_up = top_set(means[b], 2)
        noise_se = None
        if val_images:
            scores = [placements[i][b]["per_seed"] for i in (best, runner_up)]
            variances = [sum(accuracy_se(a[s], val_images) ** 2 for a in scores) for s in range(len(seeds))]
            noise_se = 100.0 * math.sqrt(statistics.fmean(variances))
        differences = [x - y for x, y in zip(rows[b][best], rows[b][runner_up], strict=True)]
        mean, low, high = paired_interval(differences, noise_se=noise_se)
        leader[b] = {
            "best": labels[best],
            "runner_up": labels[runner_up],
            "difference_points": mean,
            "interval_points": [low, high],
            "separated": low > 0.0,
        }
        sd, df = paired_sd(rows[b]) or (math.nan, 0)
        low_sd, high_sd = sd_interval(sd, df)
        measured = sd > 0  # a spread of zero sizes nothing
        needed[b] = {
            "sd_points": sd,
            "df": df,
            "sd_interval_points": [low_sd, high_sd],
            "effects": [
                {
                    "effect_points": e,
                    "seeds": _needed(e, sd, measured),
                    "range": [_needed(e, low_sd, measured), _needed(e, high_sd, measured)],
                }
                for e in EFFECTS
            ],
        }
    grid_mean = {b: statistics.fmean(means[b]) / 100.0 for b in BUDGETS}
    return {
        "fidelity": fidelity,
        "noise_ceiling": ceiling,
        "leader": leader,
        "seeds_needed": needed,
        "grid_mean": grid_mean,
    }


def _needed(effect: float, sd: float, measured: bool) -> int | None:
    return seeds_needed(effect, sd) if measured else None
