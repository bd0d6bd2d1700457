"""How the views show what a study's scores are evidence of, and no more: the marks of a placement map, the sentence
for a slot where no module separated, differences written with their 95% interval, and noise-aware shades.

Every view that judges placements (the run's closing table, the live placement map, ``watch``, ``report``'s
terminal tables, ``summary.md``, ``report.html`` and ``heatmap.png``) takes its verdicts from
:meth:`attnsearch.results.StudyResults.verdicts` and writes them with the names here:

- :data:`BEST` (★) marks a slot's best module only where the 95% interval of leader minus runner-up excludes 0;
- :data:`LEADS` (~) marks the leader of any other slot, and the view says :data:`TIE_SENTENCE`;
- :data:`WITHIN` (≈) marks a cell whose difference from its slot's reference (``none``, or the slot's mean where
  ``none`` was not tried: :meth:`~attnsearch.results.StudyResults.differences`) has an interval containing 0, or
  none at all.

Shades (:func:`shading`): a cell's tone is its difference from the reference over one span for the whole map,
``span = max(largest |difference|, 2 x the median 95% half-width of the differences' intervals)``, so a difference
within the typical noise is at most about half-toned and the map is never scaled to noise alone. A difference
whose noise is unknown (no interval: too few trials and no recorded noise) has an unbounded noise floor and is
drawn neutral (tone 0).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .record import PERCENT_METRICS
from .results import StudyResults

__all__ = [
    "BEST",
    "LEADS",
    "TIE_SENTENCE",
    "WITHIN",
    "Shade",
    "Shading",
    "format_difference",
    "mark",
    "shading",
]

BEST = "★"  # a slot's best module: its lead over the runner-up is separated (95% interval excludes 0)
LEADS = "~"  # the leader of a slot where no module separated
WITHIN = "≈"  # a difference from the slot's reference whose 95% interval contains 0, or that has none
TIE_SENTENCE = "no module separated at this budget"


def format_difference(
    metric: str, difference: float | None, low: float | None = None, high: float | None = None, *, digits: int = 2
) -> str:
    """A difference in ``metric`` with its 95% interval: accuracies in percentage points (``pt``), other metrics in
    their own units; ``-`` for no difference, ``, no interval`` where the noise is unknown.

    Example:
        >>> format_difference("val_acc", 0.002, -0.024, 0.028, digits=1)
        '+0.2 pt [-2.4, +2.8]'
        >>> format_difference("val_acc", -0.0625, None, None), format_difference("params", 120.0, 80.0, 160.0)
        ('-6.25 pt, no interval', '+120 [+80, +160]')
    """
    if difference is None:
        return "-"
    if metric in PERCENT_METRICS:
        scale, unit, style = 100.0, " pt", f"+.{digits}f"
    else:
        scale, unit, style = 1.0, "", "+.4g"
    text = f"{scale * difference:{style}}{unit}"
    if low is None or high is None:
        return text + ", no interval"
    return f"{text} [{scale * low:{style}}, {scale * high:{style}}]"


def mark(results: StudyResults, slot: str, module: str) -> str:
    """The mark of a (slot, module) cell: :data:`BEST` for a separated best, :data:`LEADS` for the leader of a tie,
    else nothing."""
    verdict = results.verdicts().get(slot)
    if verdict is None or verdict.leader != module:
        return ""
    return BEST if verdict.separated else LEADS


@dataclass(frozen=True)
class Shade:
    """One cell against its slot's reference: the difference (objective units; 0 for the reference cell itself),
    its 95% interval (None where unknown), and its tone in [-1, 1] (positive: better than the reference)."""

    difference: float | None
    low: float | None
    high: float | None
    reference: str  # none | mean | self (the none cell: the reference itself)
    tone: float = 0.0

    @property
    def is_reference(self) -> bool:
        return self.reference == "self"

    @property
    def within_noise(self) -> bool:
        """No evidence the cell differs from its reference: the interval contains 0, or there is none."""
        if self.is_reference:
            return False
        return self.low is None or self.high is None or self.low <= 0.0 <= self.high


@dataclass(frozen=True)
class Shading:
    """Slot -> module -> :class:`Shade` for every cell with a score, and the span the tones are scaled by (objective
    units; None where no difference has an interval)."""

    cells: dict[str, dict[str, Shade]] = field(default_factory=dict)
    span: float | None = None


def shading(results: StudyResults) -> Shading:
    """The shades of a study's placement map (see the module's note for the span).

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> from attnsearch.record import Metrics, TrialRecord
        >>> def trial(n, module, acc):
        ...     placed = (PlacementSpec("block3", module),) if module != "none" else ()
        ...     candidate = Candidate(BackboneSpec("vgg11", 0.25), placed)
        ...     return TrialRecord(n, "complete", candidate=candidate, metrics=Metrics(val_acc=acc, val_images=1000))
        >>> results = StudyResults({0: trial(0, "none", 0.776), 1: trial(1, "se", 0.778)},
        ...                        slots={"vgg11": {"block3": ("none", "se")}}, target=2)
        >>> found = shading(results)
        >>> se = found.cells["block3"]["se"]
        >>> round(100 * se.difference, 1), se.within_noise, round(100 * found.span, 1), round(se.tone, 3)
        (0.2, True, 7.3, 0.027)
        >>> found.cells["block3"]["none"].is_reference
        True
    """
    scores, differences = results.slot_scores(), results.differences()
    sign = 1.0 if results.objectives[0][1] == "maximize" else -1.0
    raw: dict[str, dict[str, Shade]] = {}
    for slot, cells in scores.items():
        against = differences.get(slot, {})
        row = raw.setdefault(slot, {})
        for module in cells:
            effect = against.get(module)
            if effect is None:  # the reference itself (or a slot of one module: nothing to compare with)
                row[module] = Shade(0.0, None, None, "self" if module == "none" else "mean")
            else:
                row[module] = Shade(effect.difference, effect.low, effect.high, effect.reference)
    known = [s for row in raw.values() for s in row.values() if s.low is not None and s.high is not None]
    if not known:
        return Shading(raw, None)
    largest = max(abs(s.difference or 0.0) for s in known)
    noise = statistics.median((s.high - s.low) / 2.0 for s in known)  # type: ignore[operator]
    span = max(largest, 2.0 * noise)
    if span <= 0.0:
        return Shading(raw, None)
    toned = {
        slot: {
            module: s
            if s.low is None or s.difference is None
            else Shade(s.difference, s.low, s.high, s.reference, max(-1.0, min(1.0, sign * s.difference / span)))
            for module, s in row.items()
        }
        for slot, row in raw.items()
    }
    return Shading(toned, span)
