"""Plain, one-line-per-event output of a run (CI, log files, ``--no-dashboard``) and the end-of-run tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from .runner import Event

__all__ = ["plain_log", "print_summary"]


def plain_log(stream: IO[str] | None = None) -> Callable[[Event], None]:
    """An event sink that writes ``HH:MM:SS trial N <kind>: <text>`` lines and flushes each one."""
    out = stream or sys.stdout

    def emit(event: Event) -> None:
        who = f"trial {event.trial} " if event.trial is not None else ""
        out.write(f"{time.strftime('%H:%M:%S')} {who}{event.kind}: {event.text}\n")
        out.flush()

    return emit


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _count(value: Any) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """The leaderboard (top 10) and the best module per slot."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items()))
    console.print(f"[bold]{summary['name']}[/bold]: {states or 'no trials yet'}", highlight=False)
    if not summary["leaderboard"]:
        console.print("No completed trial yet.")
        return
    metric = summary["objectives"][0]["metric"]
    table = Table(title="Leaderboard", title_justify="left")
    for column in ("#", "trial", "placements", metric, "params", "FLOPs", "train s"):
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(summary["leaderboard"], 1):
        score = row["values"][0]
        shown = _percent(score) if metric in ("val_acc", "val_top5") else f"{score:.4g}"
        if row.get("val_acc_std") is not None and metric == "val_acc":
            shown += f" ± {100 * row['val_acc_std']:.2f}"
        table.add_row(
            str(rank),
            str(row["number"]),
            row["placements"],
            shown,
            _count(row["params"]),
            _count(row["flops"]),
            f"{row['train_seconds']:.1f}" if row["train_seconds"] else "-",
        )
    console.print(table)
    slots = Table(title="Best module per slot (mean score over completed trials)", title_justify="left")
    for column in ("slot", "best", "score", "trials", "others"):
        slots.add_column(column, overflow="fold")
    for slot, info in summary["slots"].items():
        best = info["modules"][info["best"]]
        others = "  ".join(
            f"{m} {_percent(v['mean'])} ({v['count']})" for m, v in info["modules"].items() if m != info["best"]
        )
        slots.add_row(slot, info["best"], _percent(best["mean"]), str(best["count"]), others)
    console.print(slots)
