"""What the dashboard shows, as plain data: fed by a run's Events, or read back from a results folder and its study.

Nothing here draws: :mod:`attnsearch.dashboard.views` turns a :class:`DashboardState` into rich renderables.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..search.store import RETRY_REASONS, ResultsStore

if TYPE_CHECKING:
    import optuna

    from ..search.runner import Event
    from ..space import SearchSpace

__all__ = ["Cell", "DashboardState", "EventLine", "RunningTrial", "TrialRow"]

RECENT = 20  # events kept for the recent-events panel
PERCENT_METRICS = ("val_acc", "val_top5")


@dataclass
class RunningTrial:
    """A trial being trained: where, what, and how far."""

    number: int
    placements: dict[str, str]  # slot -> module, every slot of its backbone ('none' for an empty one)
    epochs: int  # planned epochs
    label: str = ""  # the candidate written out, module parameters included
    epoch: int = 0  # last epoch reported
    value: float | None = None  # validation score of that epoch
    device: str = ""
    host: str = ""
    started: float | None = None  # wall-clock seconds


@dataclass
class TrialRow:
    """A trial that is over: complete, pruned, failed or infeasible."""

    number: int
    state: str  # complete | pruned | failed | infeasible
    placements: dict[str, str]  # slot -> module, every slot of its backbone ('none' for an empty one)
    label: str = ""  # the candidate written out, module parameters included
    values: tuple[float, ...] | None = None  # objective values, complete trials only
    spread: float | None = None  # std of the first objective over repeats (val_acc only)
    reason: str | None = None
    params: float | None = None
    flops: float | None = None
    seconds: float | None = None  # training time
    images_per_second: float | None = None
    epochs_run: int = 0
    reused_from: int | None = None
    finished: float | None = None  # wall-clock seconds

    @property
    def score(self) -> float | None:
        """The first objective's value, ``None`` unless complete."""
        return self.values[0] if self.values else None


@dataclass(frozen=True)
class EventLine:
    """One line of the recent-events panel."""

    at: float  # wall-clock seconds
    kind: str  # pruned | failed | infeasible | best | reused | resumed | note
    trial: int | None
    text: str


@dataclass(frozen=True)
class Cell:
    """One (slot, module) cell of the placement map: mean first-objective score of complete trials, and how many."""

    mean: float
    count: int


@dataclass
class DashboardState:
    """Everything the dashboard draws, kept up to date by :meth:`apply` or read back by :meth:`from_store`.

    Example:
        >>> from attnsearch.search.runner import Event
        >>> state = DashboardState()
        >>> state.apply(Event("note", text="timeout of 60 s reached"))
        >>> [line.text for line in state.events]
        ['timeout of 60 s reached']
        >>> state.counts()["complete"]
        0
    """

    name: str = ""
    backbones: list[str] = field(default_factory=list)
    sampler: str = ""
    pruner: str = ""
    objectives: list[tuple[str, str]] = field(default_factory=lambda: [("val_acc", "maximize")])  # (metric, dir)
    slots: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # backbone -> slot -> modules
    repeats: int = 1
    target: int = 0  # trials the run is asked to finish
    counted_at_start: int = 0  # trials already done when this run began (a continued study)
    started: float | None = None  # wall-clock seconds the run (or, read back, its first trial) began
    ended: float | None = None  # wall-clock seconds the study finished, when read back finished
    folder: Path | None = None
    running: dict[int, RunningTrial] = field(default_factory=dict)
    trials: dict[int, TrialRow] = field(default_factory=dict)
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=RECENT))
    version: int = 0  # bumped by every change; a view may cache what it drew for one version

    # -- fed by events -------------------------------------------------------------------------------------------

    def apply(self, event: Event, *, now: float | None = None) -> None:
        """Update from one runner Event (``now``: its wall-clock time, default the present)."""
        at = time.time() if now is None else now
        kind, number, data = event.kind, event.trial, event.data
        self.version += 1
        if kind == "run":
            if data.get("space") is not None:
                self.configure(data["space"])
            self.target = int(data.get("target", self.target))
            self.counted_at_start = int(data.get("finished", 0))
            self.started = at
            if data.get("folder") is not None:
                self.folder = Path(data["folder"])
                self._read_folder()
        elif kind == "started" and number is not None:
            candidate = data.get("candidate")
            self.running[number] = RunningTrial(
                number,
                self._placed(candidate),
                epochs=candidate.train.epochs if candidate is not None else 0,
                label=event.text,
                started=at,
            )
            self._set_worker(number, data.get("worker"))
        elif kind == "epoch" and number is not None:
            running = self.running.get(number)
            if running is not None:
                running.epoch = int(data.get("epoch", running.epoch))
                running.epochs = int(data.get("epochs", running.epochs))
                running.value = data.get("value")
                self._set_worker(number, data.get("worker"))
        elif kind in ("finished", "pruned", "failed", "infeasible") and number is not None:
            self._finish(number, "complete" if kind == "finished" else kind, data, at)
        elif kind == "reused" and number is not None:  # its record names the trial whose score it reuses
            self.running.pop(number, None)
            record = self._read_record(number)
            if record is not None:
                self.trials[number] = self._row(record)
            self.events.append(EventLine(at, kind, number, event.text))
        elif kind in ("best", "resumed", "note"):
            self.events.append(EventLine(at, kind, number, event.text))

    def configure(self, space: SearchSpace) -> None:
        """Take the study's name, backbones, slots, sampler, pruner and objectives from its space."""
        search = space.config.search
        self.name = space.name
        self.backbones = list(space.backbones)
        self.sampler = search.sampler
        self.pruner = search.pruner
        self.objectives = [(o.metric, o.direction) for o in search.objectives]
        self.slots = {b: {s: list(ms) for s, ms in slots.items()} for b, slots in space.slots.items()}
        self.repeats = search.repeats
        self.version += 1

    def _set_worker(self, number: int, worker: Mapping[str, Any] | None) -> None:
        if worker and number in self.running:
            running = self.running[number]
            running.device = _device(worker) or running.device
            running.host = str(worker.get("host") or running.host)

    def _finish(self, number: int, state: str, data: Mapping[str, Any], at: float) -> None:
        running = self.running.pop(number, None)
        record = self._read_record(number)
        if record is not None and record.get("state") == state:
            row = self._row(record)
        else:
            metrics = data.get("metrics") or {}
            row = TrialRow(
                number,
                state,
                running.placements if running else {},
                label=running.label if running else "",
                values=self._values(metrics) if state == "complete" else None,
                reason=data.get("reason"),
                **_costs(metrics),
                epochs_run=running.epoch if running else 0,
            )
        row.finished = at
        self.trials[number] = row
        if state == "pruned":
            epochs = f"epoch {row.epochs_run}/{running.epochs}" if running and running.epochs else "an early epoch"
            value = f" at {self.format_score(running.value)}" if running and running.value is not None else ""
            self.events.append(EventLine(at, state, number, f"after {epochs}{value}: {row.label}"))
        elif state in ("failed", "infeasible"):
            self.events.append(EventLine(at, state, number, f"{row.reason or state}: {row.label}"))

    # -- read back from disk -------------------------------------------------------------------------------------

    @classmethod
    def from_store(
        cls,
        store: ResultsStore,
        *,
        space: SearchSpace | None = None,
        study: optuna.Study | None = None,
    ) -> DashboardState:
        """The state of a study from its folder (trial records) and, when given, its Optuna study (epoch progress).

        Reads only. ``space`` defaults to the folder's ``space.yaml``. Raises ``StoreError`` or ``SpaceError``
        (one line) for a folder that is not a study.

        Example:
            >>> state = DashboardState.from_store(ResultsStore("results/vgg16-shapes-quick"))  # doctest: +SKIP
            >>> state.counts()["complete"]  # doctest: +SKIP
            12
        """
        if space is None:
            from ..space import parse_space
            from ..yamlfile import read_yaml

            space = parse_space(read_yaml(store.space_path), check_data=False)
        state = cls(folder=store.root)
        state.configure(space)
        state.target = _target(space)
        state._absorb(list(store.trials()), study)
        if state.trials and not state.running:  # nothing in flight: the clock stops at the last trial's end
            state.ended = max((row.finished for row in state.trials.values() if row.finished), default=None)
        state.version += 1
        return state

    def _read_folder(self) -> None:
        if self.folder is None:
            return
        store = ResultsStore(self.folder)
        self._absorb([r for r in store.trials() if r.get("state") != "running"], None)

    def _read_record(self, number: int) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        try:
            return ResultsStore(self.folder).read_trial(number)
        except ValueError:
            return None

    def _absorb(self, records: list[dict[str, Any]], study: optuna.Study | None) -> None:
        progress: dict[int, tuple[int, float]] = {}
        if study is not None:
            for t in study.get_trials(deepcopy=False):
                if t.intermediate_values:
                    step = max(t.intermediate_values)
                    progress[t.number] = (step, t.intermediate_values[step])
        for record in records:
            number = record["number"]
            if record.get("state") == "running":
                candidate = record.get("candidate") or {}
                worker = record.get("worker") or {}
                epoch, value = progress.get(number, (0, None))
                self.running[number] = RunningTrial(
                    number,
                    self._placed(candidate),
                    epochs=int((candidate.get("train") or {}).get("epochs") or 0),
                    label=str(record.get("placements") or ""),
                    epoch=epoch,
                    value=value,
                    device=_device(worker),
                    host=str(worker.get("host") or ""),
                    started=_timestamp(record.get("started")),
                )
            else:
                self.trials[number] = self._row(record)
        begun = [t for t in (_timestamp(r.get("started")) for r in records) if t is not None]
        if begun and self.started is None:
            self.started = min(begun)
        self._replay_events()

    def _replay_events(self) -> None:
        """Recent events of trials read back: pruned, failed, infeasible and each new best, in finishing order."""
        best: float | None = None
        for row in sorted(self.trials.values(), key=lambda r: (r.finished or 0, r.number)):
            at = row.finished or 0.0
            if row.state == "pruned":
                self.events.append(EventLine(at, "pruned", row.number, f"after epoch {row.epochs_run}: {row.label}"))
            elif row.state in ("failed", "infeasible"):
                self.events.append(EventLine(at, row.state, row.number, f"{row.reason or row.state}: {row.label}"))
            elif self._improves(row, best):
                best = row.score
                text = f"{row.label}  {self.objectives[0][0]} {self.format_score(row.score)}"
                self.events.append(EventLine(at, "best", row.number, text))

    def _improves(self, row: TrialRow, best: float | None) -> bool:
        if row.score is None or row.reused_from is not None or len(self.objectives) != 1:
            return False
        return best is None or self.better(row.score, best)

    def _row(self, record: dict[str, Any]) -> TrialRow:
        metrics = record.get("metrics") or {}
        state = str(record.get("state"))
        history = record.get("history") or []
        return TrialRow(
            record["number"],
            state,
            self._placed(record.get("candidate")),
            label=str(record.get("placements") or ""),
            values=self._values(metrics) if state == "complete" else None,
            spread=metrics.get("val_acc_std") if self.objectives[0][0] == "val_acc" else None,
            reason=record.get("reason"),
            **_costs(metrics),
            epochs_run=len(history),
            reused_from=record.get("reused_from"),
            finished=_timestamp(record.get("finished")),
        )

    def _values(self, metrics: Mapping[str, Any]) -> tuple[float, ...] | None:
        values = [metrics.get(metric) for metric, _ in self.objectives]
        if any(v is None for v in values):
            return None
        return tuple(float(v) for v in values)

    def _placed(self, candidate: Any) -> dict[str, str]:
        """Slot -> module for a Candidate or its dict; every slot of its backbone, 'none' where nothing is placed."""
        if candidate is None:
            return {}
        if isinstance(candidate, Mapping):
            backbone = (candidate.get("backbone") or {}).get("name", "")
            placed = {p["slot"]: p["module"] for p in candidate.get("placements") or []}
        else:
            backbone = candidate.backbone.name
            placed = {p.slot: p.module for p in candidate.placements}
        slots = self.slots.get(backbone) or {}
        return {slot: placed.get(slot, "none") for slot in slots} | placed

    # -- derived figures -----------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Trials per state, plus ``running`` and ``done`` (what counts towards the target, as the runner counts)."""
        counts = {"complete": 0, "pruned": 0, "failed": 0, "infeasible": 0, "running": len(self.running)}
        done = 0
        for row in self.trials.values():
            counts[row.state] = counts.get(row.state, 0) + 1
            done += row.state != "failed" or row.reason not in RETRY_REASONS
        counts["done"] = done
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
        """Mean training throughput of the last ``last`` complete trials (images per second, per trial)."""
        done = sorted(
            (r for r in self.trials.values() if r.images_per_second and r.reused_from is None),
            key=lambda r: (r.finished or 0, r.number),
        )
        values = [r.images_per_second for r in done[-last:] if r.images_per_second is not None]
        return statistics.fmean(values) if values else None

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` on the first objective."""
        return a > b if self.objectives[0][1] == "maximize" else a < b

    def ranked(self) -> list[TrialRow]:
        """Complete trials best first by the first objective; duplicates that reused a score left out."""
        sign = -1.0 if self.objectives[0][1] == "maximize" else 1.0
        rows = [r for r in self.trials.values() if r.score is not None and r.reused_from is None]
        return sorted(rows, key=lambda r: (sign * (r.score or 0.0), r.number))

    def placement_map(self) -> dict[str, dict[str, Cell]]:
        """Slot -> module -> mean score and count over complete trials, modules in the space's order."""
        scores: dict[str, dict[str, list[float]]] = {
            slot: {m: [] for m in modules} for slot, modules in self.slot_modules().items()
        }
        for row in self.ranked():
            for slot, module in row.placements.items():
                scores.setdefault(slot, {}).setdefault(module, []).append(row.score or 0.0)
        return {
            slot: {m: Cell(statistics.fmean(v), len(v)) for m, v in modules.items() if v}
            for slot, modules in scores.items()
        }

    def best_cells(self) -> dict[str, str]:
        """Slot -> the module with the best mean score there."""
        best: dict[str, str] = {}
        for slot, cells in self.placement_map().items():
            for module, cell in cells.items():
                if slot not in best or self.better(cell.mean, cells[best[slot]].mean):
                    best[slot] = module
        return best

    def slot_modules(self) -> dict[str, list[str]]:
        """Slot -> modules tried there, over every backbone, in the space's order."""
        merged: dict[str, list[str]] = {}
        for slots in self.slots.values():
            for slot, modules in slots.items():
                known = merged.setdefault(slot, [])
                known.extend(m for m in modules if m not in known)
        return merged

    def pareto(self) -> list[TrialRow]:
        """The non-dominated complete trials over every objective, by the first objective; empty for one objective."""
        if len(self.objectives) < 2:
            return []
        rows = [r for r in self.ranked() if r.values is not None and len(r.values) == len(self.objectives)]
        signs = [1.0 if direction == "maximize" else -1.0 for _, direction in self.objectives]

        def dominates(a: TrialRow, b: TrialRow) -> bool:
            pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values or (), b.values or (), strict=True)]
            return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

        return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]

    def format_score(self, value: float | None, metric: str | None = None) -> str:
        """A score as people read it: accuracies in percent, other metrics with 4 significant digits."""
        if value is None:
            return "-"
        metric = metric or self.objectives[0][0]
        return f"{100 * value:.1f}%" if metric in PERCENT_METRICS else f"{value:.4g}"


def _costs(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "params": metrics.get("params"),
        "flops": metrics.get("flops"),
        "seconds": metrics.get("train_seconds"),
        "images_per_second": metrics.get("images_per_second"),
    }


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _target(space: SearchSpace) -> int:
    sampler = space.config.search.sampler
    if sampler == "grid":
        return space.size()
    if sampler == "ablation":
        return len(space.ablation())
    return space.config.search.n_trials


def _device(worker: Mapping[str, Any]) -> str:
    """``cpu``, ``cuda:0``; under Ray the GPU ids the cluster gave the worker (its own view is always cuda:0)."""
    gpus = worker.get("gpus") or []
    return f"gpu {','.join(map(str, gpus))}" if gpus else str(worker.get("device") or "")
