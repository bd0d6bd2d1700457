"""The statistics a study's verdicts rest on: Student's t quantiles and the two intervals of a difference in scores.

- :func:`paired_interval`: the mean of paired differences and its t-interval (two trials that differ only at one
  slot make a pair);
- :func:`welch_interval`: the difference of two groups' means and Welch's t-interval, for unequal variances
  (Welch, "The generalization of 'Student's' problem when several different population variances are involved",
  Biometrika 1947).

The t distribution's quantile is found by bisection on its CDF, written through the regularized incomplete beta
function (Numerical Recipes, 3rd ed., section 6.4).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["CONFIDENCE", "paired_interval", "t_quantile", "welch_interval"]

CONFIDENCE = 0.95


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (any real df > 0).

    Example:
        >>> round(t_quantile(0.975, 4), 4)
        2.7764
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):  # bisection: the cdf is monotone, 200 halvings reach float precision
        middle = (low + high) / 2.0
        if _t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of paired differences and its t-interval: ``mean ± t(df=n-1) * sd / sqrt(n)``; needs n >= 2.

    Example:
        >>> mean, low, high = paired_interval([1.0, 2.0, 3.0])
        >>> mean, round(low, 3), round(high, 3)
        (2.0, -0.484, 4.484)
    """
    n = len(differences)
    if n < 2:
        raise ValueError("a paired interval needs at least two pairs")
    mean = statistics.fmean(differences)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_interval(
    with_module: Sequence[float], without: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Difference of means ``mean(with_module) - mean(without)`` and Welch's t-interval; needs 2+ on each side.

    Example:
        >>> diff, low, high = welch_interval([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
        >>> diff, round(low, 3), round(high, 3)
        (2.0, -0.267, 4.267)
    """
    n1, n2 = len(with_module), len(without)
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's interval needs at least two trials on each side")
    difference = statistics.fmean(with_module) - statistics.fmean(without)
    v1, v2 = statistics.variance(with_module) / n1, statistics.variance(without) / n2
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        return difference, difference, difference
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return difference, difference - half, difference + half


def _t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz), as in Numerical Recipes."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result
