"""``attnsearch bench overhead``: what a trial costs besides its training steps.

The trials run through the same functions as ``attnsearch run``, in the same order, on a real Optuna study with
its JournalStorage in a temporary folder: the runner's ask (``study.ask``, ``SearchSpace.suggest``, the trial's
attributes, its "running" record), the worker (:func:`~attnsearch.search.worker.run_candidate`: build, costs,
training with a validation pass after each epoch the pruner looks at, and the last), the pruner's report after
each epoch, the runner's tell (which writes the final record) and the dashboard's share of the events. Nothing in
the runner is changed: the pieces are timed from outside, training steps through the ``should_stop`` poll that
``train_model`` makes after every step.

The pruner is asked after each validated epoch, as in a run, but its answer is not followed: every trial measured
runs all its epochs, so that the medians compare like with like (a pruned trial's last look would pass for a
score).

A piece is *fixed* when it is not a training step. The first step of a trial counts as a training step for the
median step's time; what it takes beyond that (the trainer's set-up, first-call kernel and allocator warm-up) is
the "first-batch warm-up".
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import load_average

__all__ = ["OverheadBench", "OverheadPart", "bench_overhead"]

QUICKSTART = Path("search_spaces") / "quickstart.yaml"
FIXED_GOAL_SHARE = 0.03  # the goals: under 3% of a trial's time, and under half a second
FIXED_GOAL_SECONDS = 0.5
SCORE_PART = "evaluation, last epoch (the score)"


@dataclass
class OverheadPart:
    part: str
    milliseconds: float  # median over the trials
    per_trial: list[float] = field(default_factory=list)  # ms, in trial order


@dataclass
class OverheadBench:
    """Fixed cost per trial, piece by piece, against the time in training steps (medians over the trials).

    Example:
        >>> bench = bench_overhead(trials=1, epochs=1, train_size=64, val_size=32)  # doctest: +SKIP
        >>> bench.fixed_share < 1.0  # doctest: +SKIP
        True
    """

    config: dict[str, Any]
    parts: list[OverheadPart]  # the fixed pieces, in the order a trial meets them
    training_ms: float  # time in training steps
    fixed_ms: float  # sum of the parts
    fixed_share: float  # fixed / (fixed + training)
    fixed_share_without_eval: float  # the same with the validation passes counted as work, not overhead
    # the same with the last epoch's validation counted as work: that pass is the trial's score
    fixed_share_score_as_work: float
    steps: int  # training steps per trial
    per_run_ms: dict[str, float] = field(default_factory=dict)  # paid once per run, not per trial

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows: each fixed part, all of them, and the training steps, as ``bench overhead``."""
        trial = self.fixed_ms + self.training_ms
        rows = [[p.part, f"{p.milliseconds:,.1f}", f"{p.milliseconds / trial:.2%}"] for p in self.parts]
        rows.append(["fixed, in all", f"{self.fixed_ms:,.1f}", f"{self.fixed_share:.2%}"])
        rows.append([f"training steps ({self.steps})", f"{self.training_ms:,.1f}", f"{self.training_ms / trial:.2%}"])
        c = self.config
        title = (
            f"Overhead per trial: {c['space']}, {c['epochs']} epochs of {c['train_size']} images, {c['val_size']} "
            f"validation images, median of {c['trials']} trials"
        )
        return title, ["part", "ms", "share of the trial"], rows

    def notes(self) -> list[str]:
        """The lines printed after the table: the goal met or not, counted two ways, and the share without eval."""
        goal = self.config["goal"]
        score = next(p.milliseconds for p in self.parts if p.part == SCORE_PART)
        lines = []
        for label, share, ms in (
            ("fixed, every evaluation counted", self.fixed_share, self.fixed_ms),  # the goal as the issue sets it
            # the pass that scores the trial is its measurement: the figure without it, for comparison
            ("fixed, the score's pass counted as work", self.fixed_share_score_as_work, self.fixed_ms - score),
        ):
            met = share < goal["share"] and ms < goal["milliseconds"]
            lines.append(
                f"{label}: {ms:,.0f} ms = {share:.2%} of the trial; goal under {goal['share']:.0%} and "
                f"{goal['milliseconds']:,.0f} ms: {'met' if met else 'not met'}"
            )
        lines.append(f"without any evaluation: {self.fixed_share_without_eval:.2%}")
        return lines


def bench_overhead(
    *,
    space_file: Path | str = QUICKSTART,
    trials: int = 3,
    epochs: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> OverheadBench:
    """Run ``trials`` trials of ``space_file`` (default the quickstart) and time every piece of each.

    ``epochs``, ``train_size`` and ``val_size`` override the space's, for a shorter measurement. ``threads``
    sets torch's threads for the trials, as ``execution.threads`` does.
    """
    import optuna
    import torch

    from ..data import load_dataset
    from ..search.runner import open_study
    from ..device import resolve_device
    from ..search.worker import Constraints
    from ..space import parse_space
    from ..yamlfile import read_yaml

    load = load_average()  # before this process adds its own
    source = read_yaml(space_file)
    if not isinstance(source, dict):
        raise ValueError(f"{space_file}: not a space file")
    train = dict(source.get("train") or {})
    data = dict(source.get("data") or {})
    if epochs is not None:
        train["epochs"] = epochs
    if train_size is not None:
        data["train_size"] = train_size
    if val_size is not None:
        data["val_size"] = val_size
    search = {**(source.get("search") or {}), "n_trials": trials}
    source = {**source, "name": "bench-overhead", "train": train, "data": data, "search": search}
    space = parse_space(source)
    torch_device = resolve_device(device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_run: dict[str, float] = {}
    started = time.perf_counter()
    dataset = load_dataset(space.data_spec()).to(torch_device)
    per_run["load dataset"] = _ms(time.perf_counter() - started)
    constraints = Constraints(**space.config.search.constraints.model_dump())
    records: list[dict[str, float]] = []
    steps: list[int] = []
    with tempfile.TemporaryDirectory(prefix="attnsearch-bench-") as tmp:
        store = _TimedStore(Path(tmp) / space.name)
        started = time.perf_counter()
        store.create(Path(space_file).read_bytes())
        study = open_study(space, store)
        per_run["open study"] = _ms(time.perf_counter() - started)
        dashboard = _DashboardProbe.create(space, store.root)
        for _ in range(trials):
            timed, count = _one_trial(space, study, store, dataset, torch_device, constraints, threads, dashboard)
            records.append(timed)
            steps.append(count)
    names = [name for name in records[0] if name != "training steps"]
    parts = [
        OverheadPart(name, statistics.median(r[name] for r in records), [r[name] for r in records]) for name in names
    ]
    training = statistics.median(r["training steps"] for r in records)
    fixed = sum(p.milliseconds for p in parts)
    evaluation = sum(p.milliseconds for p in parts if p.part.startswith("evaluation"))
    score = next(p.milliseconds for p in parts if p.part == SCORE_PART)
    config = {
        "space": str(space_file),
        "trials": trials,
        "load_average_before": load,
        "backbone": space.config.backbone.model_dump(),
        "epochs": space.config.train.epochs,
        "train_size": dataset.train_x.shape[0],
        "val_size": dataset.val_x.shape[0],
        "batch_size": space.config.train.batch_size,
        "device": str(torch_device),
        "threads": threads or torch.get_num_threads(),
        "storage": "JournalStorage (file) in a temporary folder",
        "dashboard": dashboard is not None,
        "goal": {"share": FIXED_GOAL_SHARE, "milliseconds": FIXED_GOAL_SECONDS * 1000},
    }
    return OverheadBench(
        config=config,
        parts=parts,
        training_ms=training,
        fixed_ms=fixed,
        fixed_share=fixed / (fixed + training),
        fixed_share_without_eval=(fixed - evaluation) / (fixed + training),
        fixed_share_score_as_work=(fixed - score) / (fixed + training),
        steps=int(statistics.median(steps)),
        per_run_ms=per_run,
    )


def _one_trial(
    space: Any,
    study: Any,
    store: _TimedStore,
    dataset: Any,
    device: Any,
    constraints: Any,
    threads: int | None,
    dashboard: _DashboardProbe | None,
) -> tuple[dict[str, float], int]:
    """One trial, the runner's way; returns milliseconds per piece and the training steps it took."""
    import torch

    from ..search.runner import ATTR, Event, counts_towards_target, judge_epoch, tell_trial, trial_record
    from ..search.store import timestamp
    from ..search.worker import run_candidate

    emit = dashboard if dashboard is not None else _ignore
    store.seconds = 0.0
    if dashboard is not None:
        dashboard.seconds = dashboard.spent = 0.0
    # ask: what the runner's loop does from counting finished trials to submitting the job
    t0 = time.perf_counter()
    sum(counts_towards_target(t) for t in study.get_trials(deepcopy=False))
    trial = study.ask()
    candidate = space.suggest(trial)
    trial.set_user_attr(ATTR, {"candidate": candidate.to_dict(), "key": candidate.key(), "retry_of": None})
    started = timestamp()
    store.write_trial(trial_record(trial.number, candidate, trial.params, "running", None, started=started))
    emit(Event("started", trial.number, candidate.describe(), {"candidate": candidate, "worker": {}}))
    ask = time.perf_counter() - t0 - store.seconds - _dashboard_seconds(dashboard)

    # the worker, with the stamps: after every step (should_stop), before and after every epoch's report
    stamps = _Stamps()

    def report(epoch: int, value: float | None) -> bool:  # as the runner's on_report
        stamps.report_begin.append(time.perf_counter())
        # asked and timed, not obeyed: every trial measured is a whole one
        judge_epoch(trial, epoch, value, single_objective=len(space.directions) == 1)
        emit(
            Event(
                "epoch",
                trial.number,
                f"epoch {epoch}",
                {"epoch": epoch, "epochs": candidate.train.epochs, "value": value, "worker": {}},
            )
        )
        stamps.report_end.append(time.perf_counter())
        return False

    def should_stop() -> bool:
        if device.type == "cuda":
            # a step's kernels run after the call that queued them returns: wait, so that each step's time is
            # its own (the real loop overlaps them, so training steps are a little slower here than in a run)
            torch.cuda.synchronize(device)
        stamps.steps.append(time.perf_counter())
        return False

    worker_dashboard = _dashboard_seconds(dashboard)
    called = time.perf_counter()
    outcome = run_candidate(
        candidate,
        dataset,
        device=device,
        constraints=constraints,
        threads=threads,
        report=report,
        should_stop=should_stop,
    )
    returned = time.perf_counter()
    if outcome.state not in ("complete", "pruned"):
        raise RuntimeError(f"benchmark trial ended {outcome.state}: {outcome.reason}")
    worker_dashboard = _dashboard_seconds(dashboard) - worker_dashboard
    timings = outcome.timings
    step_times, first = stamps.split(called + timings["build"] + timings["costs"])
    # the first step counts as training up to a typical step's time, and as warm-up beyond it (a first step that
    # a noisy machine ran faster than the median is all training: never a negative warm-up)
    first_as_training = min(first, statistics.median(step_times)) if step_times else first
    training = sum(step_times) + first_as_training
    warm_up = first - first_as_training
    report_seconds = sum(e - b for b, e in zip(stamps.report_begin, stamps.report_end, strict=True))
    report_seconds -= worker_dashboard  # the epoch events' dashboard time is the dashboard's
    accounted = timings["build"] + timings["costs"] + first + sum(step_times) + timings["eval"] + report_seconds
    other = returned - called - accounted - worker_dashboard

    store.seconds = 0.0
    told_dashboard = _dashboard_seconds(dashboard)
    t0 = time.perf_counter()
    tell_trial(space, study, store, trial, candidate, outcome, 0, emit, started=started)
    tell = time.perf_counter() - t0 - store.seconds - (_dashboard_seconds(dashboard) - told_dashboard)
    records = store.seconds + store.running_seconds
    timed = {
        "ask": ask,
        "build": timings["build"],
        "costs (count, latency)": timings["costs"],
        "first-batch warm-up and set-up": warm_up,
        # the last epoch's pass is the trial's score; the earlier ones (maybe on a subset) serve the pruner
        "evaluation, epochs before the last": timings["eval"] - outcome.history[-1]["val_seconds"],
        SCORE_PART: outcome.history[-1]["val_seconds"],
        "report + prune": report_seconds,
        "worker bookkeeping": other,
        "tell": tell,
        "record writing": records,
    }
    if dashboard is not None:
        timed["dashboard"] = dashboard.seconds + dashboard.clock_seconds(returned - called)
    timed["training steps"] = training
    return {name: _ms(seconds) for name, seconds in timed.items()}, len(stamps.steps)


@dataclass
class _Stamps:
    steps: list[float] = field(default_factory=list)  # after each step
    report_begin: list[float] = field(default_factory=list)  # each epoch's report, called after its validation
    report_end: list[float] = field(default_factory=list)

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


class _TimedStore:
    """The results store, with the time spent writing records counted."""

    def __init__(self, root: Path) -> None:
        from ..search.store import ResultsStore

        self._store = ResultsStore(root)
        self.seconds = 0.0
        self.running_seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_trial(self, record: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self._store.write_trial(record)
        elapsed = time.perf_counter() - t0
        if record.get("state") == "running":
            self.running_seconds = elapsed
        self.seconds += elapsed


class _DashboardProbe:
    """The live dashboard's work for the events of a run: the real :class:`LiveDashboard` on an off-screen console.

    As on screen, each event changes the state at once, and a frame is drawn per tick of the view's ticker
    (``refresh_per_second`` ticks a second) in which the state changed: the events of one tick (a trial's end, the
    best so far and the next trial's start come within milliseconds) share a frame. The probe draws a tick's
    frame when the first event of a later tick arrives, so every frame is drawn, and timed, once. Unchanged
    panels are reused, as on screen. In each second without a frame the clock redraws the header alone:
    :meth:`clock_seconds` counts those.
    """

    def __init__(self, dashboard: Any, console: Any) -> None:
        self.dashboard = dashboard
        self.console = console
        self.seconds = 0.0  # the dashboard's work
        self.spent = 0.0  # all the time spent in the probe: its work and its measurement of the header
        self.tick = 1.0 / dashboard.refresh_per_second
        self.pending: int | None = None  # the tick whose changes wait for their frame
        self.frames = 0  # frames drawn since the last clock_seconds
        self.header_seconds = 0.0  # a header-only redraw, timed after the latest frame

    @classmethod
    def create(cls, space: Any, folder: Path) -> _DashboardProbe | None:
        try:
            from rich.console import Console

            from ..dashboard.live import LiveDashboard
        except ImportError:
            return None
        from ..search.runner import Event

        console = Console(file=io.StringIO(), width=160, height=48, force_terminal=True, color_system="truecolor")
        # not started (no ticker thread, no terminal taken): the probe draws, and times, every frame itself
        probe = cls(LiveDashboard(console=console, screen=False), console)
        probe(Event("run", data={"space": space, "target": space.config.search.n_trials, "finished": 0}))
        probe.seconds = 0.0
        return probe

    def __call__(self, event: Any) -> None:
        began = t0 = time.perf_counter()
        tick = int(t0 / self.tick)
        if self.pending is not None and self.pending != tick:  # the ticker drew the earlier tick's frame
            self._draw()
            self.frames += 1
            self.seconds += time.perf_counter() - t0
            self._time_header()  # on a frame that is up to date: a measurement, not the dashboard's work
            t0 = time.perf_counter()
        self.dashboard.on_event(event)
        self.pending = tick
        end = time.perf_counter()
        self.seconds += end - t0
        self.spent += end - began

    def _draw(self) -> None:
        self.console.print(self.dashboard._frame)  # what Live draws: the frame, its unchanged panels reused
        self.console.file.seek(0)
        self.console.file.truncate()

    def _time_header(self) -> None:
        self.dashboard._frame.second = -1  # the clock moved on: the header alone is drawn again
        t0 = time.perf_counter()
        self._draw()
        self.header_seconds = time.perf_counter() - t0

    def clock_seconds(self, trial_seconds: float) -> float:
        """The header-only redraws (the clock moved on a second) of the trial's seconds without a frame."""
        redraws, self.frames = max(0.0, trial_seconds - self.frames), 0
        return self.header_seconds * redraws


def _dashboard_seconds(dashboard: _DashboardProbe | None) -> float:
    """The time spent in the probe so far, taken out of the piece whose events it drew."""
    return dashboard.spent if dashboard is not None else 0.0


def _ignore(event: Any) -> None:
    return None


def _ms(seconds: float) -> float:
    return seconds * 1000
