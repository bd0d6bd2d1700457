"""The confirmation race on the dashboard: what its events (live) and its records (read back) add to the state.

The race (:mod:`attnsearch.search.confirm`) runs after the search. Its trials are records of their own (``phase:
confirm``), numbered apart from the search's, so the dashboard keeps them apart too: in
``DashboardState.confirm_running`` (and ``confirm_stale`` read back) and in the results' ``confirm_records``, never
in the search's counts, ranking or placement map. Its verdict is
:meth:`attnsearch.results.StudyResults.confirmation` of those records, the same that ``report`` and
``summary.json`` give; the recent-events panel gets a line when the race begins, one per seed round that ends, one
per contender dropped, one per confirmation trial that fails, and one with the verdict.

A race continued by a later run (after a crash or a stop) announces the rounds it finished before
(:class:`~attnsearch.search.events.ConfirmStarted`'s ``rounds_done``) but not their records: the live view then
says so and shows what this run adds, until the race's end brings the whole verdict; ``watch`` reads every record.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..confirmation import Confirmation
from ..record import TrialRecord
from ..search.events import (
    ConfirmEnded,
    ConfirmEpochEnded,
    ConfirmRoundEnded,
    ConfirmStarted,
    ConfirmTrialEnded,
    ConfirmTrialStarted,
    Event,
)
from .progress import EventLine, RunningTrial

if TYPE_CHECKING:
    from .state import DashboardState

__all__ = ["RaceInfo", "apply_race_event", "confirm_label", "drop_line", "read_back_race", "round_line"]


@dataclass(frozen=True)
class RaceInfo:
    """The race as its :class:`~attnsearch.search.events.ConfirmStarted` announced it (live only)."""

    contenders: tuple[str, ...]  # their labels, in the order they entered (the baseline among them)
    seeds: int  # seed rounds planned
    budget: str  # e.g. "2 epochs on 512 training images"
    rounds_before: int = 0  # rounds finished before this run (a continued race): their records are not seen live


def confirm_label(record: TrialRecord) -> str:
    """A confirmation trial as the running panel names it, e.g. ``confirm r2 block3=se``.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> se = Candidate(BackboneSpec("vgg11", 0.25), (PlacementSpec("block3", "se"),))
        >>> confirm_label(TrialRecord(4, "running", candidate=se, phase="confirm", confirm_round=2))
        'confirm r2 block3=se'
    """
    return f"confirm r{record.confirm_round} {record.label}"


def round_line(r: int, leader: str | None, remaining: int) -> str:
    """The events panel's line for seed round ``r`` over, e.g. ``round 2 over, leader block3=se; 3 remain``."""
    return f"round {r} over" + (f", leader {leader}" if leader else "") + f"; {remaining} remain"


def drop_line(label: str, r: int) -> str:
    """The events panel's line for a contender the rule dropped after round ``r``."""
    return f"{label} dropped after round {r}: behind the leader"


def _failed_line(record: TrialRecord) -> str:
    return f"{confirm_label(record)}: {record.reason or record.state}"


def _running(state: DashboardState, record: TrialRecord, started: float | None) -> RunningTrial:
    return RunningTrial(
        record.number,
        state.results.placed(record),
        epochs=record.candidate.train.epochs if record.candidate is not None else 0,
        label=confirm_label(record),
        device=record.worker.describe(),
        host=record.worker.host or "",
        started=started,
        pid=record.worker.pid,
    )


def apply_race_event(state: DashboardState, event: Event, at: float) -> bool:
    """Take one of the race's events into ``state`` (at wall-clock ``at``); False for any other event."""
    if isinstance(event, ConfirmStarted):
        state.race = RaceInfo(event.contenders, event.seeds, event.budget, event.rounds_done)
        state.race_verdict = None
        state.events.append(EventLine(at, "confirm", None, event.text))
    elif isinstance(event, ConfirmTrialStarted):
        record = event.record
        state.results = state.results.with_confirm_record(record)
        state.confirm_running[record.number] = _running(state, record, at)
    elif isinstance(event, ConfirmEpochEnded):
        running = state.confirm_running.get(event.number)
        if running is not None:
            running.epoch, running.epochs, running.value = event.epoch, event.epochs, event.value
    elif isinstance(event, ConfirmTrialEnded):
        record = event.record
        state.confirm_running.pop(record.number, None)
        state.results = state.results.with_confirm_record(record)
        if record.state != "complete":
            state.events.append(EventLine(at, record.state, None, _failed_line(record)))
    elif isinstance(event, ConfirmRoundEnded):
        state.race_rounds = event.round
        state.events.append(EventLine(at, "round", None, round_line(event.round, event.leader, len(event.remaining))))
        for label in event.dropped:
            state.race_dropped[label] = event.round
            state.events.append(EventLine(at, "dropped", None, drop_line(label, event.round)))
    elif isinstance(event, ConfirmEnded):
        state.race_verdict = event.verdict
        state.events.append(EventLine(at, "confirmed", None, event.text))
    else:
        return False
    return True


def read_back_race(state: DashboardState, gone: Collection[int] = ()) -> None:
    """Fill ``state`` (built from results read back) with the race its confirmation records hold: the trials left
    running (``gone``: the numbers of those whose process is gone, shown stale) and the race's event lines."""
    results = state.results
    for number, record in sorted(results.confirm_records.items()):
        if record.state == "running":
            trial = _running(state, record, record.started_at)
            (state.confirm_stale if number in gone else state.confirm_running)[number] = trial
    verdict = state.confirmation()
    if verdict is None:
        return
    lines = []
    records = list(results.confirm_records.values())
    for record in records:
        if record.state not in ("complete", "running"):
            lines.append(EventLine(record.finished_at or 0.0, record.state, None, _failed_line(record)))
    ends: dict[int, float] = {}
    for record in records:
        if record.confirm_round is not None and record.finished_at is not None:
            ends[record.confirm_round] = max(ends.get(record.confirm_round, 0.0), record.finished_at)
    for r in range(1, verdict.rounds + 1):
        at = ends.get(r, 0.0)
        lines.append(EventLine(at, "round", None, round_line(r, *_leader(verdict, r))))
        for c in verdict.contenders:
            if c.dropped_in == r:
                lines.append(EventLine(at, "dropped", None, drop_line(c.label, r)))
    if verdict.finished:
        lines.append(EventLine(max(ends.values(), default=0.0), "confirmed", None, ConfirmEnded(verdict).text))
    state.events.extend(sorted(lines, key=lambda line: line.at))  # stable: a round's drops follow its line
    for trial in state.confirm_stale.values():
        where = f" (pid {trial.pid}" + (f" on {trial.host})" if trial.host else ")") if trial.pid else ""
        text = f"process gone{where}, left running: {trial.label}"
        state.events.append(EventLine(trial.started or 0.0, "stale", None, text))


def _leader(verdict: Confirmation, r: int) -> tuple[str | None, int]:
    """The leader after round ``r`` (the best mean over rounds 1..r among those still in) and how many remain, as
    the race announced them when the round ended."""
    alive = [c for c in verdict.contenders if c.dropped_in is None or c.dropped_in > r]
    sign = 1.0 if verdict.direction == "maximize" else -1.0
    scored = {c.label: [s for k, s in c.scores.items() if k <= r] for c in alive}
    means = {label: statistics.fmean(scores) for label, scores in scored.items() if scores}
    leader = max(means, key=lambda label: sign * means[label]) if means else None
    return leader, len(alive)
