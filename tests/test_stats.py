"""Student's t quantiles against the printed tables, and the two intervals on hand-made scores."""

from __future__ import annotations

import math
import statistics

import pytest

from attnsearch.stats import paired_interval, t_quantile, welch_interval

# t(0.975, df) from the tables (e.g. NIST/SEMATECH e-Handbook, table 1.4.3)
T975 = {1: 12.706204736174705, 2: 4.302652729911275, 4: 2.7764451051977987, 10: 2.2281388519649385}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_tables(df: int) -> None:
    assert t_quantile(0.975, df) == pytest.approx(T975[df], rel=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], rel=1e-9)


def test_intervals_on_hand_made_scores() -> None:
    differences = [0.010, 0.020, 0.045]
    mean, low, high = paired_interval(differences)
    half = T975[2] * statistics.stdev(differences) / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.025, 0.025 - half, 0.025 + half))
    # equal sizes and variances: Welch's df is 2(n-1) = 4
    a, b = [0.80, 0.82, 0.84], [0.70, 0.72, 0.74]
    difference, low, high = welch_interval(a, b)
    half = T975[4] * math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 3)
    assert (difference, low, high) == pytest.approx((0.10, 0.10 - half, 0.10 + half))
