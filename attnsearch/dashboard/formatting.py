"""How the dashboard writes values: durations, SI-prefixed counts, placements, and two texts spread across a line;
and the look its panels share (:func:`panel_table`, :func:`panel`).

Pure functions from a value to its text, shared by the panels of :mod:`attnsearch.dashboard.views` and
:mod:`attnsearch.dashboard.placement`; ``-`` stands for a value not known yet.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["format_duration", "format_placements", "format_seconds", "format_si", "panel", "panel_table", "spread_line"]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_seconds(value: float | None) -> str:
    return format_duration(value) if value is None or value >= 60 else f"{value:.1f}s"


def format_si(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def format_placements(placements: Mapping[str, str]) -> str:
    return " ".join(f"{slot}={module}" for slot, module in placements.items() if module != "none") or "baseline"


def spread_line(left: Text, right: Text, width: int) -> Text:
    """``left`` and ``right`` on one line of ``width`` cells, as far apart as it allows (two spaces at least)."""
    gap = width - left.cell_len - right.cell_len
    if gap < 1:
        return Text.assemble(left, "  ", right)
    return Text.assemble(left, " " * gap, right)


def panel_table() -> Table:
    """A borderless table filling its panel, bold headers: the body of most panels."""
    return Table(box=None, padding=(0, 1), pad_edge=False, expand=True, header_style="bold", show_edge=False)


def panel(body: RenderableType, title: str, subtitle: str | None) -> Panel:
    """A rounded panel with a bold title at the left and an optional subtitle at the bottom right."""
    return Panel(
        Group(body),
        title=f"[bold]{title}[/]",
        title_align="left",
        subtitle=subtitle,
        subtitle_align="right",
        box=box.ROUNDED,
        padding=(0, 1),
    )
