"""What the dashboard shows, as plain data: fed by a run's events, or built from a study's results read back.

The study's facts (ranking, placement map, Pareto front, counts) come from its
:class:`~attnsearch.results.StudyResults`; this state adds what only a live view has: how far each running trial
has got and where it runs, the recent events, and the clock. Nothing here draws:
:mod:`attnsearch.dashboard.views` turns a :class:`DashboardState` into rich renderables, and nothing here reads a
file: a run's events carry the records they announce, and ``watch`` reads the folder through ``StudyResults``.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..confirmation import Confirmation
from ..evidence import Shading, shading
from ..record import PERCENT_METRICS, TrialRecord, WorkerInfo
from ..results import SlotScore, SlotVerdict, StudyResults
from ..search.shared import EPOCH_ATTR
from ..search.events import EpochEnded, Event, RunStarted, TrialEnded, TrialStarted
from .progress import EventLine, RunningTrial
from .race import RaceInfo, apply_race_event, read_back_race

__all__ = ["DashboardState", "EventLine", "RunningTrial"]

RECENT = 20  # events kept for the recent-events panel


@dataclass
class DashboardState:
    """Everything the dashboard draws, kept up to date by :meth:`apply` or built by :meth:`from_results`.

    Example:
        >>> from attnsearch.search.events import Note
        >>> state = DashboardState()
        >>> state.apply(Note("timeout of 60 s reached"))
        >>> [line.text for line in state.events]
        ['timeout of 60 s reached']
        >>> state.counts()["complete"]
        0
    """

    results: StudyResults = field(default_factory=StudyResults)
    running: dict[int, RunningTrial] = field(default_factory=dict)
    # read back: trials recorded as running whose process is gone (the run was killed); not counted as running
    stale: dict[int, RunningTrial] = field(default_factory=dict)
    counted_at_start: int = 0  # trials already done when this run began (a continued study)
    started: float | None = None  # wall-clock seconds the run (or, read back, its first trial) began
    ended: float | None = None  # wall-clock seconds the study finished, when read back finished
    folder: Path | None = None
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=RECENT))
    version: int = 0  # bumped by every change; a view may cache what it drew for one version
    # the confirmation race (attnsearch.dashboard.race): its trials in flight, numbered apart from the search's
    confirm_running: dict[int, RunningTrial] = field(default_factory=dict)
    confirm_stale: dict[int, RunningTrial] = field(default_factory=dict)  # read back: their process is gone
    race: RaceInfo | None = None  # as its start announced it (live only)
    race_verdict: Confirmation | None = None  # the verdict its end announced (live only)
    race_rounds: int = 0  # the last seed round whose end was announced (live only)
    race_dropped: dict[str, int] = field(default_factory=dict)  # contender -> the round it was dropped after (live)
    _shading: tuple[StudyResults, Shading] | None = field(default=None, repr=False, compare=False)
    _confirmation: tuple[StudyResults, Confirmation] | None = field(default=None, repr=False, compare=False)

    # -- what the study is ---------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.results.name

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        return self.results.objectives

    @property
    def target(self) -> int:
        return self.results.target

    @property
    def backbones(self) -> list[str]:
        space = self.results.space
        return list(space.backbones) if space is not None else list(self.results.slots)

    @property
    def sampler(self) -> str:
        return self.results.space.config.search.sampler if self.results.space is not None else ""

    @property
    def pruner(self) -> str:
        return self.results.space.config.search.pruner if self.results.space is not None else ""

    @property
    def repeats(self) -> int:
        return self.results.space.config.search.repeats if self.results.space is not None else 1

    # -- fed by events -------------------------------------------------------------------------------------------

    def apply(self, event: Event, *, now: float | None = None) -> None:
        """Update from one runner event (``now``: its wall-clock time, default the present)."""
        at = time.time() if now is None else now
        self.version += 1
        if isinstance(event, RunStarted):
            self.results = StudyResults.from_space(event.space, event.records, target=event.target)
            self.counted_at_start = event.finished
            self.started = at
            self.folder = event.folder
            self._replay_events()
        elif isinstance(event, TrialStarted):
            record = event.record
            self.results = self.results.with_record(record)
            self.running[record.number] = RunningTrial(
                record.number,
                self.results.placed(record),
                epochs=record.candidate.train.epochs if record.candidate is not None else 0,
                label=record.label,
                started=at,
            )
            self._set_worker(record.number, event.worker)
        elif isinstance(event, EpochEnded):
            running = self.running.get(event.number)
            if running is not None:
                running.epoch, running.epochs, running.value = event.epoch, event.epochs, event.value
                self._set_worker(event.number, event.worker)
        elif isinstance(event, TrialEnded):
            self._finish(event, at)
        elif apply_race_event(self, event, at):
            pass
        elif event.kind in ("best", "resumed", "note"):
            self.events.append(EventLine(at, event.kind, event.trial, event.text))

    def _set_worker(self, number: int, worker: WorkerInfo) -> None:
        running = self.running[number]
        running.device = worker.describe() or running.device
        running.host = worker.host or running.host

    def _finish(self, event: TrialEnded, at: float) -> None:
        record = event.record
        running = self.running.pop(record.number, None)
        self.results = self.results.with_record(record)
        if record.reused_from is not None:  # its record names the trial whose score it reuses
            self.events.append(EventLine(at, "reused", record.number, event.text))
        elif record.state == "pruned":
            epochs = f"epoch {len(record.history)}/{running.epochs}" if running and running.epochs else "an early epoch"
            value = f" at {self.format_score(running.value)}" if running and running.value is not None else ""
            self.events.append(EventLine(at, "pruned", record.number, f"after {epochs}{value}: {record.label}"))
        elif record.state in ("failed", "infeasible"):
            self.events.append(
                EventLine(at, record.state, record.number, f"{record.reason or record.state}: {record.label}")
            )

    # -- read back -----------------------------------------------------------------------------------------------

    @classmethod
    def from_results(
        cls,
        results: StudyResults,
        *,
        folder: Path | None = None,
        gone: Collection[int] = (),
        confirm_gone: Collection[int] = (),
    ) -> DashboardState:
        """The state of a study read back (``watch``, ``report``): its running trials' progress comes from its
        Optuna study when the results were read with one. ``gone``: the numbers of trials recorded as running
        whose process is known to be gone (``watch`` checks, :func:`attnsearch.dashboard.watch.process_gone`):
        they are :attr:`stale`, neither counted as running nor keeping the clock going; ``confirm_gone``: the same
        for the confirmation race's trials (:attr:`confirm_stale`).

        Example:
            >>> from attnsearch.record import TrialRecord
            >>> results = StudyResults(name="demo", target=2).with_record(TrialRecord(0, "running", started=None))
            >>> state = DashboardState.from_results(results, gone={0})
            >>> list(state.running), list(state.stale), state.counts()["running"], state.counts()["stale"]
            ([], [0], 0, 1)
        """
        state = cls(results=results, folder=folder)
        progress: dict[int, tuple[int, float]] = {}
        if results.study is not None:
            for t in results.study.get_trials(deepcopy=False):
                # validated epochs are intermediate values; the runner marks the others in a user attribute
                step = max(t.intermediate_values, default=0)
                value = t.intermediate_values.get(step) if step else None
                trained = t.user_attrs.get(EPOCH_ATTR)
                if isinstance(trained, int) and trained > step:
                    step = trained
                if step:
                    progress[t.number] = (step, value)
        for record in results.running():
            epoch, value = progress.get(record.number, (0, None))
            (state.stale if record.number in gone else state.running)[record.number] = RunningTrial(
                record.number,
                results.placed(record),
                epochs=record.candidate.train.epochs if record.candidate is not None else 0,
                label=record.label,
                epoch=epoch,
                value=value,
                device=record.worker.describe(),
                host=record.worker.host or "",
                started=record.started_at,
                pid=record.worker.pid,
            )
        state._replay_events()
        read_back_race(state, confirm_gone)
        begun = [t for t in (r.started_at for r in results.records.values()) if t is not None]
        state.started = min(begun, default=None)
        raced = [r for r in results.confirm_records.values() if r.state != "running"]
        stale = [*state.stale.values(), *state.confirm_stale.values()]
        if (results.finished() or raced or stale) and not state.running and not state.confirm_running:
            # nothing in flight: the clock stops at the last thing recorded (a trial's end, a stale trial's start)
            ends = [r.finished_at for r in (*results.finished(), *raced)] + [r.started for r in stale]
            state.ended = max((t for t in ends if t is not None), default=None)
        for trial in state.stale.values():
            where = f" (pid {trial.pid}" + (f" on {trial.host})" if trial.host else ")") if trial.pid else ""
            text = f"process gone{where}, left running: {trial.label}"
            state.events.append(EventLine(trial.started or 0.0, "stale", trial.number, text))
        return state

    def _replay_events(self) -> None:
        """Recent events of trials read back: pruned, failed, infeasible and each new best, in finishing order."""
        best: float | None = None
        for record in sorted(self.results.finished(), key=lambda r: (r.finished_at or 0.0, r.number)):
            at = record.finished_at or 0.0
            score = self.results.score(record)
            if record.state == "pruned":
                self.events.append(
                    EventLine(at, "pruned", record.number, f"after epoch {len(record.history)}: {record.label}")
                )
            elif record.state in ("failed", "infeasible"):
                self.events.append(
                    EventLine(at, record.state, record.number, f"{record.reason or record.state}: {record.label}")
                )
            elif (
                score is not None
                and record.reused_from is None
                and len(self.objectives) == 1
                and (best is None or self.results.better(score, best))
            ):
                best = score
                text = f"{record.label}  {self.objectives[0][0]} {self.format_score(score)}"
                self.events.append(EventLine(at, "best", record.number, text))

    # -- derived figures -----------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Trials per state, plus ``running`` and ``done`` (what counts towards the target, as the runner counts),
        and, when there are any, ``stale``: recorded as running by a process that is gone (not in ``running``)."""
        counts = self.results.counts()
        if self.stale:
            counts["running"] -= len(self.stale)
            counts["stale"] = len(self.stale)
        return counts

    def elapsed(self, now: float) -> float | None:
        """Seconds since the run began (up to its end when read back finished)."""
        if self.started is None:
            return None
        return max(0.0, (self.ended or now) - self.started)

    def trials_per_hour(self, now: float) -> float | None:
        """Trials done per hour by this run (by the whole study when read back)."""
        elapsed = self.elapsed(now)
        ran = self.counts()["done"] - self.counted_at_start
        if not elapsed or ran <= 0:
            return None
        return 3600.0 * ran / elapsed

    def eta(self, now: float) -> float | None:
        """Seconds until the target is reached at this run's pace; 0 when done, ``None`` before a trial ends."""
        remaining = self.target - self.counts()["done"]
        if remaining <= 0:
            return 0.0
        rate = self.trials_per_hour(now)
        return None if rate is None else 3600.0 * remaining / rate

    def images_per_second(self, last: int = 10) -> float | None:
        """Mean training throughput of the last ``last`` trials that trained (images per second, per trial)."""
        done = sorted(
            (r for r in self.results.finished() if r.metrics.images_per_second and r.reused_from is None),
            key=lambda r: (r.finished_at or 0.0, r.number),
        )
        values = [r.metrics.images_per_second for r in done[-last:] if r.metrics.images_per_second is not None]
        return statistics.fmean(values) if values else None

    def ranked(self) -> list[TrialRecord]:
        return self.results.ranked()

    def pareto(self) -> list[TrialRecord]:
        """The Pareto front with two or more objectives; empty with one."""
        return self.results.pareto() if len(self.objectives) > 1 else []

    def placement_map(self) -> dict[str, dict[str, SlotScore]]:
        return self.results.slot_scores()

    def best_cells(self) -> dict[str, str]:
        """Slot -> its best module, only where the lead over the runner-up is separated (a tie has none)."""
        return self.results.best_modules()

    def verdicts(self) -> dict[str, SlotVerdict]:
        """Slot -> leader, runner-up, their difference with its 95% interval, and whether it is separated."""
        return self.results.verdicts()

    def shading(self) -> Shading:
        """The noise-aware shades of the placement map (:func:`attnsearch.evidence.shading`), kept per results."""
        if self._shading is None or self._shading[0] is not self.results:
            self._shading = (self.results, shading(self.results))
        return self._shading[1]

    def slot_modules(self) -> dict[str, list[str]]:
        return self.results.slot_modules()

    def confirmation(self) -> Confirmation | None:
        """The confirmation race as it stands (:meth:`StudyResults.confirmation`, kept per results; the verdict
        its end announced, live), None for a study without one."""
        if self.race_verdict is not None:
            return self.race_verdict
        if self.race is None and not self.results.confirm_records:
            return None
        if self._confirmation is None or self._confirmation[0] is not self.results:
            self._confirmation = (self.results, self.results.confirmation())
        return self._confirmation[1]

    @property
    def race_partial(self) -> bool:
        """Live, a continued race whose earlier rounds' records this view has not seen (until its end)."""
        if self.race is None or self.race_verdict is not None or not self.race.rounds_before:
            return False
        verdict = self.confirmation()
        return verdict is not None and verdict.rounds < self.race.rounds_before

    def spread(self, record: TrialRecord) -> float | None:
        """The spread of a trial's first objective over its repeats (val_acc only), else None."""
        return record.metrics.val_acc_std if self.objectives[0][0] == "val_acc" else None

    def format_score(self, value: float | None, metric: str | None = None) -> str:
        """A score as people read it: accuracies in percent, other metrics with 4 significant digits."""
        if value is None:
            return "-"
        metric = metric or self.objectives[0][0]
        return f"{100 * value:.1f}%" if metric in PERCENT_METRICS else f"{value:.4g}"
