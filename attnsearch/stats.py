"""The statistics a study's verdicts rest on, from ``scipy.stats``: the noise of one score, the interval of a mean
and of a difference, and rank correlations.

- :func:`accuracy_se`: the standard error of an accuracy measured on ``n`` images, taken from the Wilson score
  interval (Wilson, "Probable inference, the law of succession, and statistical inference", JASA 1927) so that a
  score of 0 or 1 still has noise; :func:`wilson_interval` gives the interval itself (``scipy.stats.binomtest``);
- :class:`Estimate`: a mean, its standard error and degrees of freedom (infinite where the noise is known rather
  than estimated), with its interval; :func:`mean_estimate` makes one from scores and their own standard errors,
  :func:`difference` subtracts two with Welch-Satterthwaite degrees of freedom;
- :func:`paired_interval` (paired differences, Student's t) and :func:`welch_interval` (two groups, Welch,
  "The generalization of 'Student's' problem when several different population variances are involved",
  Biometrika 1947);
- :func:`spearman` and :func:`kendall`: rank correlations (``scipy.stats.spearmanr``, ``kendalltau``, tau-b).

Quantiles are Student's t (``scipy.stats.t``) and, for infinite degrees of freedom, the normal distribution.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CONFIDENCE",
    "Estimate",
    "accuracy_se",
    "difference",
    "kendall",
    "mean_estimate",
    "paired_interval",
    "spearman",
    "t_quantile",
    "welch_interval",
    "wilson_interval",
]

CONFIDENCE = 0.95


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (any real df > 0; ``inf``
    gives the normal distribution's).

    Raises:
        ValueError: unless 0 < p < 1 and df > 0.

    Example:
        >>> round(t_quantile(0.975, 4), 4), round(t_quantile(0.975, math.inf), 4)
        (2.7764, 1.96)
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    from scipy import stats

    return float(stats.norm.ppf(p) if math.isinf(df) else stats.t.ppf(p, df))


def _z(confidence: float) -> float:
    return t_quantile(0.5 + confidence / 2.0, math.inf)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion: ``successes`` right out of ``n`` (``scipy.stats.binomtest``).

    Raises:
        ValueError: unless 0 <= successes <= n and n >= 1.

    Example:
        >>> low, high = wilson_interval(776, 1000)
        >>> round(low, 4), round(high, 4)
        (0.7491, 0.8008)
    """
    if not 0 <= successes <= n or n < 1:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    from scipy import stats

    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def accuracy_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy (0..1) measured on ``n`` images: the half-width of its 95% Wilson interval
    over z = 1.96. Close to the normal approximation ``sqrt(p (1 - p) / n)`` away from 0 and 1, and never zero
    (a perfect score on 20 images is not a certainty).

    Raises:
        ValueError: unless 0 <= accuracy <= 1 and n >= 1.

    Example:
        >>> round(accuracy_se(0.776, 1000), 4), round((0.776 * 0.224 / 1000) ** 0.5, 4)
        (0.0132, 0.0132)
        >>> accuracy_se(1.0, 20) > 0
        True
    """
    if not 0.0 <= accuracy <= 1.0 or n < 1:
        raise ValueError(f"an accuracy needs 0 <= accuracy <= 1 and n >= 1, got {accuracy} on {n}")
    low, high = wilson_interval(round(accuracy * n), n)
    return (high - low) / (2.0 * _z(CONFIDENCE))


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error ``se`` and degrees of freedom ``df`` (``inf``: the noise is known, e.g.
    binomial, rather than estimated from a sample).

    Example:
        >>> low, high = Estimate(0.012, 0.004, math.inf).interval()
        >>> round(low, 4), round(high, 4)
        (0.0042, 0.0198)
    """

    mean: float
    se: float
    df: float = math.inf

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """``mean ± t(df) * se``, the two-sided interval at ``confidence``."""
        if self.se == 0.0:
            return self.mean, self.mean
        half = t_quantile(0.5 + confidence / 2.0, self.df) * self.se
        return self.mean - half, self.mean + half

    def excludes_zero(self, confidence: float = CONFIDENCE) -> bool:
        """The interval lies wholly above or wholly below zero."""
        low, high = self.interval(confidence)
        return low > 0.0 or high < 0.0


def mean_estimate(values: Sequence[float], ses: Sequence[float | None] | None = None) -> Estimate | None:
    """The mean of ``values`` (scores of trials) with its standard error, or None when there is no way to know it.

    The variance of the mean is the larger of the sample's ``s^2 / k`` (Student's t, ``k - 1`` df) and the scores'
    own noise ``mean(se_i^2) / k`` (normal): a small sample that happens to agree does not hide the noise each
    score is known to have. One score needs its own ``se``; scores without one need two or more of them, and
    scores without one that are all equal give None too (their spread of zero says nothing of their noise).

    Example:
        >>> e = mean_estimate([0.70, 0.74], [0.01, 0.01])
        >>> round(e.mean, 2), round(e.se, 4), e.df
        (0.72, 0.02, 1)
        >>> e = mean_estimate([0.70, 0.7002], [0.01, 0.01])
        >>> round(e.se, 5), e.df
        (0.00707, inf)
        >>> mean_estimate([0.7]) is None, mean_estimate([0.7, 0.7]) is None
        (True, True)
    """
    k = len(values)
    if k == 0:
        return None
    mean = statistics.fmean(values)
    known = [se for se in ses or () if se is not None]
    noise = statistics.fmean(se * se for se in known) / k if len(known) == k else None
    sample = statistics.variance(values) / k if k >= 2 else None
    if sample == 0.0 and noise is None:
        return None  # equal scores and no known noise: a zero-width interval would present chance as certainty
    if sample is not None and (noise is None or sample >= noise):
        return Estimate(mean, math.sqrt(sample), k - 1)
    if noise is not None:
        return Estimate(mean, math.sqrt(noise), math.inf)
    return None


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` for independent estimates: ``se = sqrt(se_a^2 + se_b^2)`` with Welch-Satterthwaite degrees of
    freedom (a side with infinite df adds nothing to the denominator).

    Example:
        >>> d = difference(Estimate(0.78, 0.013), Estimate(0.776, 0.013))
        >>> round(d.mean, 3), round(d.se, 4), d.excludes_zero()
        (0.004, 0.0184, False)
    """
    va, vb = a.se * a.se, b.se * b.se
    denominator = sum(v * v / df for v, df in ((va, a.df), (vb, b.df)) if not math.isinf(df) and v > 0)
    df = (va + vb) ** 2 / denominator if denominator > 0 else math.inf
    return Estimate(a.mean - b.mean, math.sqrt(va + vb), df)


def paired_interval(
    differences: Sequence[float], confidence: float = CONFIDENCE, *, noise_se: float | None = None
) -> tuple[float, float, float]:
    """Mean of paired differences and its t-interval: ``mean ± t(df=n-1) * sd / sqrt(n)``; needs n >= 2.
    ``noise_se``: the known standard error of one difference; the interval is never narrower than its
    ``z * noise_se / sqrt(n)`` (see :func:`mean_estimate`). Equal differences without ``noise_se`` have no
    interval: its ends are NaN.

    Raises:
        ValueError: with fewer than two pairs.

    Example:
        >>> mean, low, high = paired_interval([1.0, 2.0, 3.0])
        >>> mean, round(low, 3), round(high, 3)
        (2.0, -0.484, 4.484)
    """
    if len(differences) < 2:
        raise ValueError("a paired interval needs at least two pairs")
    ses = None if noise_se is None else [noise_se] * len(differences)
    estimate = mean_estimate(differences, ses)
    if estimate is None:  # equal differences, no known noise: no width to give
        mean = statistics.fmean(differences)
        return mean, math.nan, math.nan
    low, high = estimate.interval(confidence)
    return estimate.mean, low, high


def welch_interval(
    with_module: Sequence[float], without: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Difference of means ``mean(with_module) - mean(without)`` and Welch's t-interval; needs 2+ on each side.

    A side whose values are all equal has no known noise: the interval's ends are then NaN.

    Raises:
        ValueError: with fewer than two values on a side.

    Example:
        >>> diff, low, high = welch_interval([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
        >>> diff, round(low, 3), round(high, 3)
        (2.0, -0.267, 4.267)
    """
    if len(with_module) < 2 or len(without) < 2:
        raise ValueError("Welch's interval needs at least two trials on each side")
    a, b = mean_estimate(with_module), mean_estimate(without)
    if a is None or b is None:  # a side's values all equal: its noise is unknown
        return statistics.fmean(with_module) - statistics.fmean(without), math.nan, math.nan
    estimate = difference(a, b)
    low, high = estimate.interval(confidence)
    return estimate.mean, low, high


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long score lists (``scipy.stats.spearmanr``), ties averaged;
    NaN when one list is constant.

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 4)
        0.8
    """
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long score lists (``scipy.stats.kendalltau``); NaN when one is constant.

    Example:
        >>> round(kendall([1, 2, 3, 4], [10, 20, 40, 30]), 4)
        0.6667
    """
    from scipy import stats

    return float(stats.kendalltau(x, y).statistic)
