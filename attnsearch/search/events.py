"""What a run tells the people watching it: typed events, each carrying the record it announces.

The runner emits them; the live dashboard (:meth:`attnsearch.dashboard.state.DashboardState.apply`) and the plain
log (:func:`attnsearch.search.log.plain_log`) take them. An event carries everything its listeners need (the
:class:`~attnsearch.record.TrialRecord` of a trial that started or ended, the records of a continued study when the
run starts), so no listener reads the results folder while the run writes it.

Every event has a ``kind`` (the word the plain log prints), the ``trial`` it is about (None for the run) and a
one-line ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..record import TrialRecord, WorkerInfo

if TYPE_CHECKING:
    from ..confirmation import Confirmation
    from ..space import SearchSpace

__all__ = [
    "ConfirmEnded",
    "ConfirmEpochEnded",
    "ConfirmRoundEnded",
    "ConfirmStarted",
    "ConfirmTrialEnded",
    "ConfirmTrialStarted",
    "EpochEnded",
    "Event",
    "NewBest",
    "Note",
    "RunStarted",
    "TrialEnded",
    "TrialResumed",
    "TrialStarted",
]


class Event:
    """Something a person watching the run should hear about."""

    kind: ClassVar[str]

    @property
    def trial(self) -> int | None:
        return None

    @property
    def text(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class RunStarted(Event):
    """The run begins (or continues a study): its space, its target, and the records of the trials so far."""

    kind: ClassVar[str] = "run"
    space: SearchSpace
    target: int  # trials the run is to finish in all
    finished: int  # of them, those done before this run
    folder: Path | None = None
    capacity: int = 1  # trials at a time
    records: tuple[TrialRecord, ...] = ()  # every trial recorded before this run (finished ones)

    @property
    def text(self) -> str:
        return f"{self.space.name}: {self.finished} of {self.target} trials finished, {self.capacity} at a time"


@dataclass(frozen=True)
class _RecordEvent(Event):
    """An event about one trial, carrying its record."""

    record: TrialRecord

    @property
    def trial(self) -> int:
        return self.record.number


@dataclass(frozen=True)
class TrialStarted(_RecordEvent):
    """A trial was asked, its candidate drawn and its ``running`` record written; it goes to a worker."""

    kind: ClassVar[str] = "started"
    worker: WorkerInfo = field(default_factory=WorkerInfo)  # where it runs, when known before it starts

    @property
    def text(self) -> str:
        return self.record.label


@dataclass(frozen=True)
class EpochEnded(Event):
    """A running trial finished an epoch (``value``: its validation score, None when not validated)."""

    kind: ClassVar[str] = "epoch"
    number: int
    epoch: int
    epochs: int
    value: float | None = None
    worker: WorkerInfo = field(default_factory=WorkerInfo)

    @property
    def trial(self) -> int:
        return self.number

    @property
    def text(self) -> str:
        text = f"epoch {self.epoch}/{self.epochs}"
        if self.value is not None:
            text += f": val_acc {self.value:.2%}"
        if self.worker.node is not None:  # under Ray: where the trial runs
            gpus = ",".join(self.worker.gpus or ()) or "none"
            text += f"  [{self.worker.host} pid {self.worker.pid}, gpu {gpus}]"
        return text


@dataclass(frozen=True)
class TrialEnded(_RecordEvent):
    """A trial is over and its final record written: complete, pruned, failed, infeasible, or reused."""

    @property
    def kind(self) -> str:  # type: ignore[override]
        if self.record.reused_from is not None:
            return "reused"
        return "finished" if self.record.state == "complete" else self.record.state

    @property
    def text(self) -> str:
        record = self.record
        if record.reused_from is not None:
            return f"same candidate as trial {record.reused_from}: its score is reused"
        if record.state in ("complete", "pruned"):
            return scored_label(record)
        return f"{record.reason}  ({record.label})"


@dataclass(frozen=True)
class NewBest(_RecordEvent):
    """A complete trial beat every earlier one on the (single) objective."""

    kind: ClassVar[str] = "best"

    @property
    def text(self) -> str:
        return scored_label(self.record)


@dataclass(frozen=True)
class TrialResumed(Event):
    """A trial left running by a process that died was failed (``killed``) and its candidate queued again."""

    kind: ClassVar[str] = "resumed"
    number: int

    @property
    def trial(self) -> int:
        return self.number

    @property
    def text(self) -> str:
        return "was running when the last run stopped: failed (killed), queued again"


@dataclass(frozen=True)
class Note(Event):
    """Anything else worth a line: a timeout reached, a folder moved aside."""

    kind: ClassVar[str] = "note"
    message: str

    @property
    def text(self) -> str:
        return self.message


def scored_label(record: TrialRecord) -> str:
    """The candidate and its validation accuracy, e.g. ``block3=se  val_acc 81.25%``."""
    score = record.metrics.val_acc
    return record.label + (f"  val_acc {score:.2%}" if score is not None else "")


# ---------------------------------------------------------------------------------------------- the confirmation race
# Events of the race after the search (attnsearch.search.confirm). They derive from Event alone, never from the
# trial events above: a listener that knows only those (the dashboard dispatches on their classes) takes no
# confirmation trial for a search trial, and their ``trial`` is None (confirmation trials are numbered apart).


@dataclass(frozen=True)
class ConfirmStarted(Event):
    """The race begins (or continues): its contenders (labels, the baseline among them), its seed rounds and
    its budget in words."""

    kind: ClassVar[str] = "confirm"
    contenders: tuple[str, ...]
    seeds: int
    budget: str  # e.g. "2 epochs on 512 training images"
    rounds_done: int = 0  # rounds finished before this run

    @property
    def text(self) -> str:
        done = f", {self.rounds_done} done before" if self.rounds_done else ""
        return (
            f"confirmation race of {len(self.contenders)} candidates ({', '.join(self.contenders)}) over up to "
            f"{self.seeds} shared seeds at {self.budget}{done}"
        )


@dataclass(frozen=True)
class ConfirmTrialStarted(Event):
    """A confirmation trial's ``running`` record was written; it goes to a worker."""

    kind: ClassVar[str] = "confirm started"
    record: TrialRecord

    @property
    def text(self) -> str:
        r = self.record
        seed = r.candidate.seed if r.candidate is not None else "?"
        return f"confirmation trial {r.number} (round {r.confirm_round}, seed {seed}): {r.label}"


@dataclass(frozen=True)
class ConfirmEpochEnded(Event):
    """A running confirmation trial finished an epoch (``value``: its validation score when validated)."""

    kind: ClassVar[str] = "confirm epoch"
    number: int  # the confirmation trial's number
    epoch: int
    epochs: int
    value: float | None = None

    @property
    def text(self) -> str:
        score = f": val_acc {self.value:.2%}" if self.value is not None else ""
        return f"confirmation trial {self.number} epoch {self.epoch}/{self.epochs}{score}"


@dataclass(frozen=True)
class ConfirmTrialEnded(Event):
    """A confirmation trial is over and its final record written."""

    record: TrialRecord

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "confirm finished" if self.record.state == "complete" else f"confirm {self.record.state}"

    @property
    def text(self) -> str:
        r = self.record
        if r.state != "complete":
            return f"confirmation trial {r.number} (round {r.confirm_round}): {r.reason}  ({r.label})"
        return f"confirmation trial {r.number} (round {r.confirm_round}): {scored_label(r)}"


@dataclass(frozen=True)
class ConfirmRoundEnded(Event):
    """A seed round is over and the rule applied: who leads, who was dropped now, who remains."""

    kind: ClassVar[str] = "confirm round"
    round: int
    leader: str | None
    dropped: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        text = f"round {self.round} over"
        if self.leader is not None:
            text += f", leader {self.leader}"
        if self.dropped:
            text += f"; dropped (worse than the leader): {', '.join(self.dropped)}"
        return text + f"; {len(self.remaining)} remain"


@dataclass(frozen=True)
class ConfirmEnded(Event):
    """The race is over; ``verdict`` says what it found (its lines: :func:`attnsearch.confirmation.
    describe_confirmation`)."""

    kind: ClassVar[str] = "confirmed"
    verdict: Confirmation

    @property
    def text(self) -> str:
        winners = self.verdict.winners
        if not winners:
            return f"after {self.verdict.rounds} seed rounds: no placement beats the baseline at this budget"
        verb = "beats" if len(winners) == 1 else "beat"
        return f"after {self.verdict.rounds} seed rounds: {', '.join(c.label for c in winners)} {verb} the baseline"
