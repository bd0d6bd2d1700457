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
    from ..space import SearchSpace

__all__ = ["EpochEnded", "Event", "NewBest", "Note", "RunStarted", "TrialEnded", "TrialResumed", "TrialStarted"]


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
