"""Plain, one-line-per-event output of a run (CI, log files, ``--no-dashboard``) and the end-of-run tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ..evidence import BEST, TIE_SENTENCE, format_difference
from ..record import PERCENT_METRICS
from ..results import StudyResults
from .events import Event

__all__ = ["plain_log", "print_summary"]


def plain_log(stream: IO[str] | None = None) -> Callable[[Event], None]:
    """An event sink that writes ``HH:MM:SS trial N <kind>: <text>`` lines and flushes each one."""
    out = stream or sys.stdout

    def emit(event: Event) -> None:
        who = f"trial {event.trial} " if event.trial is not None else ""
        out.write(f"{time.strftime('%H:%M:%S')} {who}{event.kind}: {event.text}\n")
        out.flush()

    return emit


def _score(metric: str, value: float | None, *, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}" if metric in PERCENT_METRICS else f"{value:.4g}"


def _count(value: Any) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def print_summary(results: StudyResults, console: Any = None, *, top: int = 10) -> None:
    """The end of a run: trials per state, the leaderboard (``top`` rows) and the verdict per slot: its best module
    only where the lead is separated from the runner-up, else a tie (:mod:`attnsearch.evidence`)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    states = ", ".join(f"{n} {s}" for s, n in sorted(results.states().items()))
    console.print(f"[bold]{results.name}[/bold]: {states or 'no trials yet'}", highlight=False)
    ranked = results.ranked()
    if not ranked:
        console.print("No completed trial yet.")
        return
    metric = results.objectives[0][0]
    table = Table(title="Leaderboard", title_justify="left")
    for column in ("#", "trial", "placements", metric, "params", "FLOPs", "train s"):
        table.add_column(column, overflow="fold")
    for rank, record in enumerate(ranked[:top], 1):
        metrics = record.metrics
        shown = _score(metric, results.score(record))
        if metrics.val_acc_std is not None and metric == "val_acc":
            shown += f" ± {100 * metrics.val_acc_std:.2f}"
        table.add_row(
            str(rank),
            str(record.number),
            record.label,
            shown,
            _count(metrics.params),
            _count(metrics.flops),
            f"{metrics.train_seconds:.1f}" if metrics.train_seconds else "-",
        )
    console.print(table)
    _print_slots(results, console)


def _print_slots(results: StudyResults, console: Any) -> None:
    """One row per slot: the best module only where its lead over the runner-up is separated (★), else the slot is
    a tie; the leader's mean with its 95% interval, and leader minus runner-up with its 95% interval."""
    from rich.table import Table

    metric = results.objectives[0][0]
    title = f"Best module per slot, where separated (mean {metric} of complete trials, 95% intervals)"
    slots = Table(title=title, title_justify="left")
    for column in ("slot", "best", "score", "trials", "leader - runner-up", "others"):
        slots.add_column(column, overflow="fold")
    verdicts = results.verdicts()
    for slot, modules in results.slot_scores().items():
        verdict = verdicts[slot]
        leader = modules[verdict.leader]
        if verdict.separated:
            best = f"{BEST}{verdict.leader}"
        elif verdict.runner_up is None:
            best = f"tie: only {verdict.leader} tried"
        else:
            best = f"tie: {verdict.leader} vs {verdict.runner_up}"
        score = _score(metric, leader.mean)
        if leader.interval is not None:
            score += " [" + ", ".join(_score(metric, v, digits=1) for v in leader.interval) + "]"
        gap = format_difference(metric, verdict.difference, verdict.low, verdict.high, digits=1)
        others = "  ".join(
            f"{m} {_score(metric, c.mean)} ({c.count})" for m, c in modules.items() if m != verdict.leader
        )
        slots.add_row(slot, best, score, str(leader.count), gap if verdict.runner_up else "-", others)
    console.print(slots)
    if any(not v.separated for v in verdicts.values()):
        console.print(
            f"a row marked tie: {TIE_SENTENCE} in that slot (the 95% interval of leader - runner-up contains 0, or "
            "the noise is unknown).",
            highlight=False,
        )
