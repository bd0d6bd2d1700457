"""The instruments of ``attnsearch bench overhead``: a timed executor and an event sink that stamp a run from outside.

:class:`_TimedExecutor` is the local executor, stamping each training step (its ``should_stop`` poll) and each
epoch's report; :class:`_EventProbe` notes when each of the runner's events arrives and passes it to
:class:`_DashboardProbe`, the real live dashboard drawing off-screen, which times its own work. What the stamps
mean, piece by piece, is :mod:`attnsearch.bench.overhead`'s.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

from ..search.executor import LocalExecutor

__all__: list[str] = []  # bench overhead's own instruments, imported by name


@dataclass
class _Timed:
    """One trial as the timed executor saw it."""

    number: int
    called: float = 0.0  # wait() began: the worker starts
    returned: float = 0.0  # wait() returned its outcome
    steps: list[float] = field(default_factory=list)  # after each training step
    report_begin: list[float] = field(default_factory=list)  # each epoch's report, called after its validation
    report_end: list[float] = field(default_factory=list)
    outcome: Any = None

    def split(self, training_began: float) -> tuple[list[float], float]:
        """Seconds of every step but the trial's first, and the first (from the end of costs, set-up included)."""
        ends = iter(self.report_end)
        epoch_end = next(ends, None)
        previous, times, first = training_began, [], 0.0
        for i, stamp in enumerate(self.steps):
            while epoch_end is not None and epoch_end < stamp:
                previous, epoch_end = epoch_end, next(ends, None)  # a new epoch starts after the last report
            if i == 0:
                first = stamp - previous
            else:
                times.append(stamp - previous)
            previous = stamp
        return times, first


class _TimedExecutor(LocalExecutor):
    """The local executor, stamping each training step (its ``should_stop`` poll) and each epoch's report.

    The pruner is asked after each validated epoch, as in a run, and its answer not followed: every trial measured
    is a whole one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trials: dict[int, _Timed] = {}
        self.current: _Timed | None = None

    def should_stop(self) -> bool:
        if self.device.type == "cuda":
            # a step's kernels run after the call that queued them returns: wait, so that each step's time is its
            # own (the real loop overlaps them, so training steps are a little slower here than in a run)
            import torch

            torch.cuda.synchronize(self.device)
        assert self.current is not None
        self.current.steps.append(time.perf_counter())
        return super().should_stop()

    def wait(self, on_report: Any) -> list[tuple[Any, Any]]:
        timed = self.current = self.trials.setdefault(self.queue[0].number, _Timed(self.queue[0].number))

        def report(number: int, epoch: int, value: float | None, worker: Any) -> bool:
            timed.report_begin.append(time.perf_counter())
            on_report(number, epoch, value, worker)  # the runner's: the pruner reports and judges, an event
            timed.report_end.append(time.perf_counter())
            return False

        timed.called = time.perf_counter()
        done = super().wait(report)
        timed.returned = time.perf_counter()
        timed.outcome = done[0][1]
        return done


@dataclass
class _Call:
    """One event through the probe: when it arrived, when the probe was done with it, the dashboard's work."""

    event: Any
    arrived: float
    done: float
    work: float  # the dashboard's work for it (a frame drawn, the state updated)
    spent: float  # all the time spent in the probe, its measurement of the header included
    frame: bool  # whether a frame was drawn


class _EventProbe:
    """The run's event sink: notes when each event arrives and passes it to the dashboard probe."""

    def __init__(self, dashboard: _DashboardProbe | None) -> None:
        self.dashboard = dashboard
        self.calls: list[_Call] = []

    def __call__(self, event: Any) -> None:
        arrived = time.perf_counter()
        work, frame = self.dashboard(event) if self.dashboard is not None else (0.0, False)
        done = time.perf_counter()
        self.calls.append(_Call(event, arrived, done, work, done - arrived, frame))

    def clock_seconds(self, trial_seconds: float, frames: int) -> float:
        """The header-only redraws of a trial: one in each of its seconds without a frame."""
        assert self.dashboard is not None
        return self.dashboard.header_seconds * max(0.0, trial_seconds - frames)


class _DashboardProbe:
    """The live dashboard's work for the events of a run: the real :class:`LiveDashboard` on an off-screen console.

    As on screen, each event changes the state at once, and a frame is drawn per tick of the view's ticker
    (``refresh_per_second`` ticks a second) in which the state changed: the events of one tick (a trial's end, the
    best so far and the next trial's start come within milliseconds) share a frame. The probe draws a tick's
    frame when the first event of a later tick arrives, so every frame is drawn, and timed, once. Unchanged
    panels are reused, as on screen. In each second without a frame the clock redraws the header alone: its time
    is measured after each frame (:attr:`header_seconds`).
    """

    def __init__(self, dashboard: Any, console: Any) -> None:
        self.dashboard = dashboard
        self.console = console
        self.tick = 1.0 / dashboard.refresh_per_second
        self.pending: int | None = None  # the tick whose changes wait for their frame
        self.header_seconds = 0.0  # a header-only redraw, timed after the latest frame

    @classmethod
    def create(cls) -> _DashboardProbe | None:
        try:
            from rich.console import Console

            from ..dashboard.live import LiveDashboard
        except ImportError:
            return None
        console = Console(file=io.StringIO(), width=160, height=48, force_terminal=True, color_system="truecolor")
        # not started (no ticker thread, no terminal taken): the probe draws, and times, every frame itself
        return cls(LiveDashboard(console=console, screen=False), console)

    def __call__(self, event: Any) -> tuple[float, bool]:
        """Take one event; returns the dashboard's work for it (seconds) and whether a frame was drawn."""
        t0 = time.perf_counter()
        work, frame = 0.0, False
        tick = int(t0 / self.tick)
        if self.pending is not None and self.pending != tick:  # the ticker drew the earlier tick's frame
            self._draw()
            work, frame = time.perf_counter() - t0, True
            self._time_header()  # on a frame that is up to date: a measurement, not the dashboard's work
        t1 = time.perf_counter()
        self.dashboard.on_event(event)
        self.pending = tick
        return work + time.perf_counter() - t1, frame

    def _draw(self) -> None:
        self.console.print(self.dashboard._frame)  # what Live draws: the frame, its unchanged panels reused
        self.console.file.seek(0)
        self.console.file.truncate()

    def _time_header(self) -> None:
        self.dashboard._frame.second = -1  # the clock moved on: the header alone is drawn again
        t0 = time.perf_counter()
        self._draw()
        self.header_seconds = time.perf_counter() - t0
