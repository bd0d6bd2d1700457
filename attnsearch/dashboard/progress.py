"""What the dashboard keeps beside a study's records: the trials in flight (:class:`RunningTrial`, the search's and
the confirmation race's) and the lines of its recent-events panel (:class:`EventLine`). Plain data, no drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventLine", "RunningTrial"]


@dataclass
class RunningTrial:
    """A trial being trained: where, what, and how far.

    Example:
        >>> trial = RunningTrial(3, {"block3": "se"}, epochs=2, label="block3=se")
        >>> trial.epoch, trial.value
        (0, None)
    """

    number: int
    placements: dict[str, str]  # slot -> module, every slot of its backbone ('none' for an empty one)
    epochs: int  # planned epochs
    label: str = ""  # the candidate written out, module parameters included
    epoch: int = 0  # last epoch reported
    value: float | None = None  # validation score of that epoch
    device: str = ""
    host: str = ""
    started: float | None = None  # wall-clock seconds
    pid: int | None = None  # the process training it, when its record names one


@dataclass(frozen=True)
class EventLine:
    """One line of the recent-events panel.

    ``kind``: pruned | failed | infeasible | best | reused | resumed | note | stale, and for the confirmation race
    confirm (it began) | round (a seed round is over) | dropped | confirmed (its verdict)."""

    at: float  # wall-clock seconds
    kind: str
    trial: int | None  # a search trial's number; None for the run and for the race's trials (numbered apart)
    text: str
