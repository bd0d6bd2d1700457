"""``attnsearch bench overhead``: what a trial costs besides its training steps.

The trials run through ``attnsearch run``'s own loop (:func:`~attnsearch.search.runner.run_search`) on a real
Optuna study with its JournalStorage in a temporary folder, and are timed from outside through two public seams:
the executor, a :class:`~attnsearch.search.executor.LocalExecutor` whose ``should_stop`` poll (made by
``train_model`` after every step) and epoch reports are stamped, and the event sink, the real live dashboard
drawing off-screen, whose events mark where the runner's ask ends (a trial starts) and its tell ends (a trial
ends). A change to the loop changes what is measured, as it changes a run.

The pruner is asked after each validated epoch, as in a run, but its answer is not followed: every trial measured
runs all its epochs, so that the medians compare like with like (a pruned trial's last look would pass for a
score).

A piece is *fixed* when it is not a training step. The first step of a trial counts as a training step for the
median step's time; what it takes beyond that (the trainer's set-up, first-call kernel and allocator warm-up) is
the "first-batch warm-up".

The instruments (the timed executor, the event and dashboard probes) are :mod:`attnsearch.bench.overhead_probes`;
this module runs the trials and turns their stamps into pieces.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .output import load_average
from .overhead_probes import _DashboardProbe, _EventProbe, _Timed, _TimedExecutor

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
    import torch

    from ..data import load_dataset
    from ..device import resolve_device
    from ..errors import AttnsearchError
    from ..search.runner import run_search
    from ..search.settings import TrialSettings
    from ..space import parse_space
    from ..yamlfile import read_yaml

    load = load_average()  # before this process adds its own
    source = read_yaml(space_file)
    if not isinstance(source, dict):
        raise AttnsearchError(f"{space_file}: not a space file")
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
    per_run: dict[str, float] = {}
    started = time.perf_counter()
    dataset = load_dataset(space.data_spec()).to(torch_device)
    per_run["load dataset"] = _ms(time.perf_counter() - started)
    settings = TrialSettings(
        constraints=space.constraints(),
        repeats=space.config.search.repeats,
        threads=threads,
        first_val_epoch=space.first_val_epoch,
    )
    executor = _TimedExecutor(dataset, torch_device, settings)
    probe = _EventProbe(_DashboardProbe.create())
    with tempfile.TemporaryDirectory(prefix="attnsearch-bench-") as tmp:
        called = time.perf_counter()
        run_search(space, results=tmp, on_event=probe, executor=executor)
        returned = time.perf_counter()
    first, last = probe.calls[0], probe.calls[-1]
    per_run["run start (folder, study, records)"] = _ms(first.arrived - called)
    per_run["run end (summary)"] = _ms(returned - last.done)
    trained = [
        t for t in executor.trials.values() if t.outcome is not None and t.outcome.state in ("complete", "pruned")
    ]
    if not trained:
        ended = ", ".join(f"{t.outcome.state} ({t.outcome.reason})" for t in executor.trials.values() if t.outcome)
        raise RuntimeError(f"no benchmark trial trained: {ended or 'none ran'}")
    records = [_pieces(t, probe, torch_device) for t in trained]
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
        "trials": len(trained),
        "load_average_before": load,
        "backbone": space.config.backbone.model_dump(),
        "epochs": space.config.train.epochs,
        "train_size": dataset.train_x.shape[0],
        "val_size": dataset.val_x.shape[0],
        "batch_size": space.config.train.batch_size,
        "device": str(torch_device),
        "threads": threads or torch.get_num_threads(),
        "storage": "JournalStorage (file) in a temporary folder",
        "dashboard": probe.dashboard is not None,
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
        steps=int(statistics.median(len(t.steps) for t in trained)),
        per_run_ms=per_run,
    )


def _pieces(timed: _Timed, probe: _EventProbe, device: Any) -> dict[str, float]:
    """Milliseconds per piece of one trial, from the executor's stamps and the events' arrival times."""
    number, outcome = timed.number, timed.outcome
    assert outcome is not None
    own = [c for c in probe.calls if c.event.trial == number]
    started = next(c for c in own if c.event.kind == "started")
    ended = next(c for c in own if c.event.kind in ("finished", "pruned"))
    # the runner's ask: from the end of what came before (the last trial's events, or the run's start) to the
    # trial's "started" event, which follows its running record
    before = max(c.done for c in probe.calls if c.done <= started.arrived)
    ask = started.arrived - before
    epochs = [c for c in own if c.event.kind == "epoch"]  # emitted inside the runner's on_report
    epoch_dashboard = sum(c.spent for c in epochs)
    timings = outcome.timings
    step_times, first = timed.split(timed.called + timings["build"] + timings["costs"])
    # the first step counts as training up to a typical step's time, and as warm-up beyond it (a first step that
    # a noisy machine ran faster than the median is all training: never a negative warm-up)
    first_as_training = min(first, statistics.median(step_times)) if step_times else first
    report = sum(e - b for b, e in zip(timed.report_begin, timed.report_end, strict=True)) - epoch_dashboard
    accounted = timings["build"] + timings["costs"] + first + sum(step_times) + timings["eval"] + report
    last_eval = outcome.history[-1].val_seconds
    pieces = {
        "ask (count finished, ask, suggest, attributes, the running record)": ask,
        "build": timings["build"],
        "costs (count, latency)": timings["costs"],
        "first-batch warm-up and set-up": first - first_as_training,
        # the last epoch's pass is the trial's score; the earlier ones (maybe on a subset) serve the pruner
        "evaluation, epochs before the last": timings["eval"] - last_eval,
        SCORE_PART: last_eval,
        "report + prune": report,
        "worker bookkeeping": timed.returned - timed.called - accounted - epoch_dashboard,
        "tell (tell, the final record)": ended.arrived - timed.returned,
    }
    if probe.dashboard is not None:
        frames = sum(c.frame for c in own)
        pieces["dashboard"] = sum(c.work for c in own) + probe.clock_seconds(timed.returned - timed.called, frames)
    pieces["training steps"] = sum(step_times) + first_as_training
    return {name: _ms(seconds) for name, seconds in pieces.items()}


def _ms(seconds: float) -> float:
    return seconds * 1000
