"""The confirmation race's rule and verdict, from its trial records alone.

The race (:mod:`attnsearch.search.confirm` runs it) trains the search's best distinct candidates and the baseline
(nothing placed) again, one seed round after another, every contender of a round with the same seed. Its records
(``phase: confirm``) say which round each trial was, and their candidates say what was trained; everything here is
derived from them, so the run that continues a race after a crash and ``report`` reading it reach the same
decisions. The rule, applied after every round from the second:

- the **leader** is the contender still in the race with the best mean score over the rounds run (ties: the one
  that entered first);
- every other contender still in gets the paired differences of its score against the leader's, one per round both
  scored (:func:`attnsearch.stats.paired_interval`: Student's t on ``n - 1`` degrees of freedom, never narrower
  than the scores' own binomial noise, taken as if the two scores were independent: an upper bound, since paired
  scores on the same images share much of it); one whose 95% interval lies wholly on the worse side of zero is
  **dropped**;
- a contender whose trial fails on its own (diverged, out of memory, ...) is dropped in that round;
- the race is **over** when one contender is left, or when the rounds (seeds) run out.

The baseline is trained in every round while the race goes on, dropped or not: it is the reference of the verdict.
The verdict gives each contender its mean paired difference against the baseline over the rounds both scored, with
its 95% interval, and calls a placement a winner only when that interval lies wholly on the better side of zero.
A separately labelled test score (each trial scores the test split once, after training) is reported beside it;
nothing here decides anything with it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .record import PERCENT_METRICS, RETRY_REASONS, TrialRecord
from .stats import paired_interval

__all__ = ["Confirmation", "Contender", "describe_confirmation", "judge"]


@dataclass(frozen=True)
class Contender:
    """One candidate of the race: its scores per round and how it stands against the baseline."""

    key: str  # Candidate.key() of what it trains (seed aside): the race's name for it
    label: str  # its placements written out, ``baseline (nothing placed)`` for the baseline
    baseline: bool
    search_trial: int | None  # the search trial whose candidate it trains again; None: a baseline not tried there
    scores: Mapping[int, float]  # round -> first-objective score of its complete trial
    failed: Mapping[int, str]  # round -> why its trial failed on its own (it is dropped then)
    dropped_in: int | None = None  # the round after which the rule dropped it; None: still in
    difference: float | None = None  # mean paired difference against the baseline (score minus baseline's)
    low: float | None = None  # its 95% interval; None with fewer than two pairs
    high: float | None = None
    pairs: int = 0  # rounds both it and the baseline scored
    test_acc: float | None = None  # mean test-split accuracy over its trials that scored it; reported only
    test_trials: int = 0
    test_images: int | None = None

    @property
    def seeds(self) -> int:
        """Rounds it scored in."""
        return len(self.scores)


@dataclass(frozen=True)
class Confirmation:
    """The race as its records stand: contenders in the order they entered, the rounds every one of them finished,
    and whether the race is over (one left, or ``seeds`` rounds run)."""

    metric: str  # the first objective
    direction: str  # maximize | minimize
    seeds: int | None  # rounds planned (search.confirm.seeds); None when not known
    rounds: int  # rounds finished by every contender that was still in (and the baseline)
    contenders: tuple[Contender, ...]
    finished: bool

    @property
    def baseline(self) -> Contender | None:
        return next((c for c in self.contenders if c.baseline), None)

    @property
    def remaining(self) -> list[Contender]:
        """The contenders the rule has not dropped (a placement whose trial failed on its own is dropped too)."""
        return [c for c in self.contenders if c.dropped_in is None]

    def beats_baseline(self, contender: Contender) -> bool:
        """Whether the 95% interval of ``contender`` against the baseline lies wholly on the better side of zero."""
        if contender.baseline or contender.low is None or contender.high is None:
            return False
        return contender.low > 0.0 if self.direction == "maximize" else contender.high < 0.0

    @property
    def winners(self) -> list[Contender]:
        """Placements that beat the baseline, best mean difference first."""
        found = [c for c in self.contenders if self.beats_baseline(c)]
        return sorted(found, key=lambda c: -_gain(self, c.difference))

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON values (``summary.json``'s ``confirmation``)."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "seeds": self.seeds,
            "rounds": self.rounds,
            "finished": self.finished,
            "winners": [c.label for c in self.winners],
            "contenders": [
                {
                    "placements": c.label,
                    "baseline": c.baseline,
                    "search_trial": c.search_trial,
                    "scores": {str(r): s for r, s in sorted(c.scores.items())},
                    "failed": {str(r): why for r, why in sorted(c.failed.items())},
                    "dropped_in": c.dropped_in,
                    "difference": c.difference,
                    "interval": None if c.low is None else [c.low, c.high],
                    "pairs": c.pairs,
                    "beats_baseline": self.beats_baseline(c),
                    "test_acc": c.test_acc,
                    "test_trials": c.test_trials,
                    "test_images": c.test_images,
                }
                for c in self.contenders
            ],
        }


def _gain(verdict: Confirmation, value: float | None) -> float:
    """``value`` with its sign turned so that larger is better; -inf for None."""
    if value is None:
        return -math.inf
    return value if verdict.direction == "maximize" else -value


@dataclass
class _Entry:
    key: str
    label: str = ""  # "": an entrant without a record yet
    baseline: bool = False
    search_trial: int | None = None
    scores: dict[int, float] = field(default_factory=dict)
    noise: dict[int, float] = field(default_factory=dict)  # round -> variance of the score's own (binomial) noise
    failed: dict[int, str] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)  # rounds whose trial is over for good (scored, or failed)
    tests: dict[int, tuple[float, int]] = field(default_factory=dict)  # round -> (test_acc, test_images)


def judge(
    records: Iterable[TrialRecord],
    *,
    metric: str = "val_acc",
    direction: str = "maximize",
    seeds: int | None = None,
    entrants: Sequence[str] | None = None,
) -> Confirmation:
    """The race's state and verdict from its records (``phase: confirm``; others are ignored).

    ``entrants``: the contenders' keys (:meth:`Candidate.key`) in the order they entered, as the race knows them
    before it has a record of each; default: the keys the records hold, in the order of their first trial number.
    The baseline is the contender with nothing placed. ``seeds``: the rounds planned (the race is over after
    them). A trial still running, or failed for a reason that is not its own (killed, interrupted, worker lost),
    has not finished its round.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> from attnsearch.record import Metrics
        >>> bare = Candidate(BackboneSpec("vgg11", 0.25))
        >>> se = Candidate(bare.backbone, (PlacementSpec("block3", "se"),))
        >>> def trial(n, candidate, r, acc):
        ...     return TrialRecord(n, "complete", candidate=candidate, metrics=Metrics(val_acc=acc),
        ...                        phase="confirm", confirm_round=r)
        >>> runs = [(se, 0.80, 0.82, 0.81), (bare, 0.78, 0.79, 0.785)]
        >>> records = [trial(2 * (r - 1) + i, c, r, scores[r - 1])
        ...            for r in (1, 2, 3) for i, (c, *scores) in enumerate(runs)]
        >>> verdict = judge(records, seeds=3)
        >>> verdict.rounds, verdict.finished, [c.label for c in verdict.winners]
        (3, True, ['block3=se'])
        >>> [(c.label, c.dropped_in) for c in verdict.contenders]
        [('block3=se', None), ('baseline (nothing placed)', 3)]
        >>> describe_confirmation(verdict)[0]
        'block3=se beats the baseline by +2.5 pt [1.3, 3.7] over 3 seeds'
    """
    entries = _entries([r for r in records if r.phase == "confirm" and r.candidate is not None], metric)
    order = list(entrants) if entrants is not None else sorted(entries, key=lambda k: entries[k][1])
    table = [entries[k][0] if k in entries else _Entry(k) for k in order]
    maximize = direction == "maximize"
    dropped: dict[str, int] = {}
    rounds, finished = 0, False
    for r in range(1, (seeds or 10_000) + 1):
        alive = [e for e in table if e.key not in dropped]
        needed = alive + [e for e in table if e.baseline and e.key in dropped]
        if not needed or any(r not in e.finished for e in needed):
            break  # round r is not over yet (or never started)
        rounds = r
        for e in alive:
            if r in e.failed and not e.baseline:
                dropped[e.key] = r
        alive = [e for e in alive if e.key not in dropped]
        if r >= 2 and len(alive) > 1:
            leader = max(alive, key=lambda e: (_mean(e, r, maximize), -table.index(e)))
            for e in alive:
                if e is not leader:
                    interval = _paired(e, leader, r)
                    if interval is not None and (interval[2] < 0.0 if maximize else interval[1] > 0.0):
                        dropped[e.key] = r
        if len([e for e in table if e.key not in dropped]) <= 1:
            finished = True
            break
    if seeds is not None and rounds >= seeds:
        finished = True
    base = next((e for e in table if e.baseline), None)
    contenders = tuple(_contender(e, base, dropped.get(e.key)) for e in table if e.label)
    return Confirmation(metric, direction, seeds, rounds, contenders, finished and bool(contenders))


def _entries(records: list[TrialRecord], metric: str) -> dict[str, tuple[_Entry, int]]:
    """Key -> its entry and its first trial number, from the records (the latest record of a round counts)."""
    found: dict[str, tuple[_Entry, int]] = {}
    for record in sorted(records, key=lambda r: r.number):
        candidate = record.candidate
        assert candidate is not None
        key = candidate.key()
        if key not in found:
            entry = _Entry(key, candidate.describe(), not candidate.placements, record.confirm_of)
            found[key] = (entry, record.number)
        entry = found[key][0]
        r = record.confirm_round
        if r is None or r in entry.finished:
            continue
        score = record.score(metric) if record.state == "complete" else None
        if score is not None:
            entry.scores[r] = score
            se = record.score_se(metric)
            if se is not None:
                entry.noise[r] = se * se
            if record.test_acc is not None and record.test_images:
                entry.tests[r] = (record.test_acc, record.test_images)
            entry.finished.add(r)
        elif record.state != "running" and not (record.state == "failed" and record.reason in RETRY_REASONS):
            entry.failed[r] = record.reason or record.state  # its own failure (or complete without a score)
            entry.finished.add(r)
    return found


def _mean(entry: _Entry, upto: int, maximize: bool) -> float:
    values = [s for r, s in entry.scores.items() if r <= upto]
    if not values:
        return -math.inf
    mean = statistics.fmean(values)
    return mean if maximize else -mean


def _paired(a: _Entry, b: _Entry, upto: int | None = None) -> tuple[float, float, float] | None:
    """Mean of ``a``'s score minus ``b``'s over the rounds both scored (up to ``upto``), with its 95% interval;
    None with fewer than two such rounds, or when the differences are all equal and their noise is unknown."""
    shared = sorted(r for r in a.scores if r in b.scores and (upto is None or r <= upto))
    if len(shared) < 2:
        return None
    differences = [a.scores[r] - b.scores[r] for r in shared]
    noises = [a.noise[r] + b.noise[r] for r in shared if r in a.noise and r in b.noise]
    noise_se = math.sqrt(statistics.fmean(noises)) if len(noises) == len(shared) else None
    mean, low, high = paired_interval(differences, noise_se=noise_se)
    return None if math.isnan(low) else (mean, low, high)


def _contender(entry: _Entry, base: _Entry | None, dropped_in: int | None) -> Contender:
    difference = low = high = None
    pairs = 0
    if base is not None and not entry.baseline:
        pairs = sum(r in base.scores for r in entry.scores)
        interval = _paired(entry, base)
        if interval is not None:
            difference, low, high = interval
        elif pairs == 1:
            (r,) = (r for r in entry.scores if r in base.scores)
            difference = entry.scores[r] - base.scores[r]
    tests = list(entry.tests.values())
    return Contender(
        key=entry.key,
        label=entry.label,
        baseline=entry.baseline,
        search_trial=entry.search_trial,
        scores=dict(sorted(entry.scores.items())),
        failed=dict(sorted(entry.failed.items())),
        dropped_in=dropped_in,
        difference=difference,
        low=low,
        high=high,
        pairs=pairs,
        test_acc=statistics.fmean(t for t, _ in tests) if tests else None,
        test_trials=len(tests),
        test_images=tests[0][1] if tests else None,
    )


# ---------------------------------------------------------------------------------------------- in words


def describe_confirmation(verdict: Confirmation) -> list[str]:
    """The verdict in plain lines: one per placement (best first) against the baseline, a line saying when no
    placement beats it, and the separately labelled test scores.

    Differences of accuracies are in percentage points (``pt``); other metrics in their own units.

    Example:
        >>> describe_confirmation(Confirmation("val_acc", "maximize", 5, 0, (), False))
        ['no confirmation trial has finished a round yet']
    """
    if not verdict.contenders or verdict.rounds == 0:
        return ["no confirmation trial has finished a round yet"]
    percent = verdict.metric in PERCENT_METRICS
    unit = " pt" if percent else ""
    scale = 100.0 if percent else 1.0

    def number(value: float) -> str:
        return f"{scale * value:+.1f}" if percent else f"{value:+.4g}"

    def bound(value: float) -> str:
        return f"{scale * value:.1f}" if percent else f"{value:.4g}"

    lines = []
    if not verdict.finished:
        planned = f" of {verdict.seeds}" if verdict.seeds else ""
        lines.append(f"race in progress: {verdict.rounds}{planned} seed rounds finished")
    placements = [c for c in verdict.contenders if not c.baseline]
    for c in sorted(placements, key=lambda c: -_gain(verdict, c.difference)):
        seeds = f"over {c.pairs} seed{'s' if c.pairs != 1 else ''}"
        if c.difference is None:
            why = next(iter(c.failed.values()), "no score")
            lines.append(f"{c.label}: no paired score against the baseline ({why})")
            continue
        if c.low is None or c.high is None:
            text = f"{c.label}: {number(c.difference)}{unit} {seeds}: too few seeds for an interval"
        else:
            interval = f"[{bound(c.low)}, {bound(c.high)}]"
            if verdict.beats_baseline(c):
                text = f"{c.label} beats the baseline by {number(c.difference)}{unit} {interval} {seeds}"
            elif _gain(verdict, c.high if verdict.direction == "maximize" else c.low) < 0:
                text = f"{c.label} is worse than the baseline: {number(c.difference)}{unit} {interval} {seeds}"
            else:
                text = f"{c.label}: {number(c.difference)}{unit} {interval} {seeds}: not separated"
        if c.failed:
            r, why = next(iter(c.failed.items()))
            text += f" (failed in round {r}: {why})"
        elif c.dropped_in is not None:
            text += f" (dropped after round {c.dropped_in}: behind the leader)"
        lines.append(text)
    if not verdict.winners:
        lines.append(
            "no placement beats the baseline at this budget"
            if verdict.finished
            else "no placement beats the baseline so far (the race goes on)"
        )
    tested = [c for c in verdict.contenders if c.test_acc is not None]
    if tested:
        scores = ", ".join(
            f"{c.label} {100 * c.test_acc:.1f}% ({c.test_trials} seed{'s' if c.test_trials != 1 else ''})"
            for c in tested
            if c.test_acc is not None
        )
        images = tested[0].test_images
        lines.append(f"test split ({images:,} images; reported only, never used to select): {scores}")
    return lines
