"""The statistics of placements at one slot, which :class:`~attnsearch.results.StudyResults` answers with: a cell's
mean and noise (:class:`SlotScore`), the verdict between a slot's leader and runner-up (:class:`SlotVerdict`), and
a module's effect against ``none`` or against the slot's mean (:class:`Effect`).

Every interval is 95% and never narrower than the noise the scores are known to carry (a trial's
:meth:`~attnsearch.record.TrialRecord.score_se`): see :func:`attnsearch.stats.mean_estimate`. Scores without a
recorded noise (records of attnsearch before November 2026, or objectives other than accuracies) get intervals
from their spread alone, and none from a single trial.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .record import TrialRecord
from .stats import Estimate, difference, mean_estimate, paired_interval

__all__ = [
    "Effect",
    "SlotScore",
    "SlotVerdict",
    "against_mean",
    "effect_against_none",
    "slot_score",
    "slot_verdict",
    "split_at",
]

Scored = tuple[str, str, float, "float | None"]  # (module at the slot, key of the rest of the candidate, score, se)


@dataclass(frozen=True)
class SlotScore:
    """One (slot, module) cell: the mean first-objective score of the ranked trials with that placement, and its
    noise (see :func:`attnsearch.stats.mean_estimate`)."""

    mean: float
    count: int
    se: float | None = None  # standard error of the mean; None where the trials do not say (one trial, no noise)
    df: float = math.inf  # degrees of freedom of se (count - 1 where estimated from the trials' spread)

    @property
    def estimate(self) -> Estimate | None:
        return None if self.se is None else Estimate(self.mean, self.se, self.df)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the mean, None where its noise is unknown."""
        return None if self.se is None else Estimate(self.mean, self.se, self.df).interval()

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``'s cell: mean, count, se and the interval (null where unknown)."""
        interval = self.interval
        return {"mean": self.mean, "count": self.count, "se": self.se, "interval": list(interval) if interval else None}


@dataclass(frozen=True)
class SlotVerdict:
    """Which module leads at ``slot`` and whether the lead is evidence: the 95% interval of the difference between
    the leader's mean and the runner-up's (Welch-Satterthwaite, :func:`attnsearch.stats.difference`) excludes
    zero. Otherwise the slot is a tie: no module separated at this budget."""

    slot: str
    leader: str  # the module with the best mean score
    runner_up: str | None  # the next best; None where only one module was tried
    difference: float | None  # leader minus runner-up in the first objective's units (negative when minimizing)
    low: float | None  # its 95% interval; None where the noise of a side is unknown
    high: float | None
    separated: bool  # the interval excludes zero: the leader is the best module of the slot

    @property
    def tie(self) -> bool:
        return not self.separated


@dataclass(frozen=True)
class Effect:
    """The effect of ``module`` at ``slot`` against ``none`` there: score with it minus score without."""

    slot: str
    module: str
    difference: float | None  # mean difference in the first objective's units; None without trials on a side
    low: float | None  # the 95% confidence interval, None where too few trials give one
    high: float | None
    method: str  # paired | unpaired | too few
    n: int  # pairs (paired), or trials with the module (unpaired)
    n_none: int  # pairs (paired), or trials on the reference's side (unpaired)
    reference: str = "none"  # what the module is compared with: none, or the slot's mean where none was not tried

    @property
    def tie(self) -> bool:
        """No evidence the module changes the score: the interval contains zero, or there is none."""
        return self.low is None or self.high is None or self.low <= 0.0 <= self.high

    @property
    def basis(self) -> str:
        """How the interval was made, in words."""
        if self.method == "paired":
            return f"paired, {self.n} pairs"
        if self.method == "unpaired":
            return f"unpaired (Welch), {self.n} vs {self.n_none} trials"
        if self.n == 0 or self.n_none == 0:
            return f"no trial with {self.module if self.n == 0 else self.reference}"
        return f"no interval: {self.n} vs {self.n_none} trials, their noise unknown"


def slot_score(values: Sequence[float], ses: Sequence[float | None]) -> SlotScore:
    """The cell of trials scoring ``values`` with standard errors ``ses`` (None where unknown).

    Example:
        >>> cell = slot_score([0.70, 0.72], [0.0145, 0.0145])
        >>> round(cell.mean, 2), cell.count, round(cell.se, 4)
        (0.71, 2, 0.0103)
    """
    estimate = mean_estimate(values, ses)
    if estimate is None:
        return SlotScore(statistics.fmean(values), len(values))
    return SlotScore(estimate.mean, len(values), estimate.se, estimate.df)


def slot_verdict(slot: str, cells: Mapping[str, SlotScore], *, maximize: bool = True) -> SlotVerdict:
    """The leader of ``cells`` (module -> cell, in the order of each module's best trial: the first wins equal
    means), the runner-up, and whether the difference's interval excludes zero.

    Example:
        >>> v = slot_verdict("block3", {"se": SlotScore(0.80, 1, 0.013), "none": SlotScore(0.70, 1, 0.014)})
        >>> v.leader, v.runner_up, round(v.difference, 2), v.separated
        ('se', 'none', 0.1, True)
    """
    order = sorted(cells, key=lambda m: cells[m].mean, reverse=maximize)  # stable: equal means keep their order
    leader = order[0]
    if len(order) == 1:
        return SlotVerdict(slot, leader, None, None, None, None, False)
    runner_up = order[1]
    first, second = cells[leader].estimate, cells[runner_up].estimate
    gap = cells[leader].mean - cells[runner_up].mean
    if first is None or second is None:
        return SlotVerdict(slot, leader, runner_up, gap, None, None, False)
    estimate = difference(first, second)
    low, high = estimate.interval()
    return SlotVerdict(slot, leader, runner_up, gap, low, high, estimate.excludes_zero())


def against_mean(slot: str, cells: Mapping[str, SlotScore]) -> dict[str, Effect]:
    """Each module's difference from the mean of the slot's module means (a slot where ``none`` was not tried),
    the cells taken as independent: ``m_i - mean_j(m_j) = (1 - 1/k) m_i - sum_{j != i} m_j / k``.

    Example:
        >>> found = against_mean("block3", {"se": SlotScore(0.6, 1, 0.02), "cbam": SlotScore(0.8, 1, 0.02)})
        >>> round(found["cbam"].difference, 2), found["cbam"].reference, found["cbam"].low > 0
        (0.1, 'mean', True)
    """
    if len(cells) < 2:
        return {}
    centre = statistics.fmean(c.mean for c in cells.values())
    ses = {m: c.se for m, c in cells.items()}
    k, known = len(cells), None not in ses.values()
    effects = {}
    for module, cell in cells.items():
        low = high = None
        if known:
            variance = ((1 - 1 / k) * ses[module]) ** 2 + sum((se / k) ** 2 for m, se in ses.items() if m != module)  # type: ignore[operator]
            low, high = Estimate(cell.mean - centre, math.sqrt(variance)).interval()
        total = sum(c.count for c in cells.values())
        method = "unpaired" if known else "too few"
        effects[module] = Effect(slot, module, cell.mean - centre, low, high, method, cell.count, total, "mean")
    return effects


def effect_against_none(slot: str, module: str, scored: Sequence[Scored]) -> Effect:
    """The effect of ``module`` at ``slot`` against ``none`` there, from every ranked trial's ``(module at the
    slot, key of the rest of its candidate, score, se)``: paired where two or more pairs of trials differ only at
    the slot (Student's t), else Welch's over all trials with and without it (from their spread, or from their
    recorded noise), else no interval.

    Example:
        >>> scored = [("se", "a", 0.72, None), ("none", "a", 0.70, None), ("se", "b", 0.74, None),
        ...           ("none", "b", 0.71, None)]
        >>> e = effect_against_none("block3", "se", scored)
        >>> e.method, round(e.difference, 3), e.n
        ('paired', 0.025, 2)
    """
    groups: dict[str, dict[str, list[tuple[float, float | None]]]] = {}  # rest -> module here -> (score, se)
    for here, rest, value, se in scored:
        groups.setdefault(rest, {}).setdefault(here, []).append((value, se))
    pairs = []  # (difference of the group means, its noise variance where both sides' noise is known)
    for group in groups.values():
        if module in group and "none" in group:
            a, b = _estimate(group[module]), _estimate(group["none"])
            known = a is not None and b is not None and math.isinf(a.df) and math.isinf(b.df)
            gap = statistics.fmean(v for v, _ in group[module]) - statistics.fmean(v for v, _ in group["none"])
            pairs.append((gap, a.se**2 + b.se**2 if known else None))  # type: ignore[union-attr]
    if len(pairs) >= 2:
        noises = [n for _, n in pairs]
        noise_se = math.sqrt(statistics.fmean(noises)) if None not in noises else None  # type: ignore[arg-type]
        mean, low, high = paired_interval([d for d, _ in pairs], noise_se=noise_se)
        if math.isnan(low):  # equal differences, no recorded noise: no interval
            return Effect(slot, module, mean, None, None, "too few", len(pairs), len(pairs))
        return Effect(slot, module, mean, low, high, "paired", len(pairs), len(pairs))
    with_module = [(v, se) for here, _, v, se in scored if here == module]
    without = [(v, se) for here, _, v, se in scored if here == "none"]
    a, b = _estimate(with_module), _estimate(without)
    if a is not None and b is not None:
        estimate = difference(a, b)
        low, high = estimate.interval()
        return Effect(slot, module, estimate.mean, low, high, "unpaired", len(with_module), len(without))
    gap = None
    if with_module and without:
        gap = statistics.fmean(v for v, _ in with_module) - statistics.fmean(v for v, _ in without)
    return Effect(slot, module, gap, None, None, "too few", len(with_module), len(without))


def split_at(record: TrialRecord, slot: str) -> tuple[str, str]:
    """The module at ``slot`` of a trial's candidate (``none`` where nothing is placed) and a key of everything
    else about it, seed included: two trials with equal keys differ only at ``slot``."""
    assert record.candidate is not None
    placements = record.candidate.placements
    module = next((p.module for p in placements if p.slot == slot), "none")
    rest = replace(record.candidate, placements=tuple(p for p in placements if p.slot != slot))
    return module, rest.key(with_seed=True)


def _estimate(scores: list[tuple[float, float | None]]) -> Estimate | None:
    return mean_estimate([v for v, _ in scores], [se for _, se in scores]) if scores else None
