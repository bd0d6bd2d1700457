"""The dashboard's "Confirmation race" panel: each contender against the baseline, and the race's status or verdict.

One row per contender, in the order they entered: its label, the seed rounds it scored, its mean paired difference
against the baseline with the 95% interval (:meth:`attnsearch.results.StudyResults.confirmation`; ``-`` before it
has two rounds paired with the baseline's, since one difference has no interval) and where it stands (``in``,
``dropped rK``, ``failed rK``, the baseline's ``reference``; once the race is over, ``beats baseline``, ``not
separated`` or ``worse``). The title says the round being run (``round r of s``) or that the race is over; below
the table, a finished race gives its verdict in the words of
:func:`attnsearch.confirmation.describe_confirmation`, wrapped to the panel's width.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from ..confirmation import Confirmation, Contender, describe_confirmation
from ..evidence import format_difference
from .formatting import panel, panel_table
from .state import DashboardState

__all__ = ["RaceRow", "confirmation_panel", "confirmation_panel_height", "race_rows"]

BORDER = 3  # the panel's two border lines and the table's header
BASELINE = "baseline (nothing placed)"  # Candidate.describe() of the baseline: its label before it has a record


@dataclass(frozen=True)
class RaceRow:
    """One contender's row: what the panel writes in each column."""

    label: str
    rounds: str
    versus: str  # the mean difference against the baseline with its 95% interval, or "-"
    status: str


def race_rows(state: DashboardState) -> list[RaceRow]:
    """The panel's rows: every contender of the race (live, also those without a trial yet), in entry order.

    Example:
        >>> from attnsearch.search.events import ConfirmStarted
        >>> state = DashboardState()
        >>> state.apply(ConfirmStarted(("block3=se", "baseline (nothing placed)"), 3, "1 epoch on 512 images"))
        >>> [(row.label, row.rounds, row.versus, row.status) for row in race_rows(state)]
        [('block3=se', '0', '-', 'waiting'), ('baseline (nothing placed)', '0', '-', 'reference')]
    """
    verdict = state.confirmation()
    if verdict is None:
        return []
    metric = verdict.metric
    found = {c.label: c for c in verdict.contenders} if not state.race_partial else {}
    labels = list(state.race.contenders) if state.race is not None else []
    labels += [label for label in found if label not in labels]
    rows = []
    for label in labels:
        c = found.get(label)
        if c is None:
            baseline = label == BASELINE
            dropped = state.race_dropped.get(label)
            status = "reference" if baseline else f"dropped r{dropped}" if dropped else "waiting"
            if state.race_partial and status == "waiting":
                status = "in"
            rows.append(RaceRow(label, "-" if state.race_partial else "0", "-", status))
            continue
        versus = format_difference(metric, c.difference, c.low, c.high, digits=1) if c.low is not None else "-"
        rows.append(RaceRow(label, str(c.seeds), versus, _status(verdict, c)))
    return rows


def _status(verdict: Confirmation, c: Contender) -> str:
    if c.baseline:
        return "reference"
    if c.failed:
        return f"failed r{next(iter(c.failed))}"
    if c.dropped_in is not None:
        return f"dropped r{c.dropped_in}"
    if not verdict.finished:
        return "in"
    if verdict.beats_baseline(c):
        return "beats baseline"
    if c.low is None or c.high is None:
        return "no interval"
    worse = c.high < 0.0 if verdict.direction == "maximize" else c.low > 0.0
    return "worse" if worse else "not separated"


def _title(state: DashboardState, verdict: Confirmation) -> str:
    seeds = verdict.seeds or (state.race.seeds if state.race is not None else None)
    of = f" of {seeds}" if seeds else ""
    if state.race_partial:
        assert state.race is not None
        return f"Confirmation race · round {max(state.race_rounds, state.race.rounds_before) + 1}{of}"
    if verdict.finished:
        left = len(verdict.remaining)
        why = f", {left} left" if left == 1 and seeds and verdict.rounds < seeds else ""
        return f"Confirmation race · over after {verdict.rounds}{of} rounds{why}"
    if state.race is None and not state.confirm_running:  # read back, nothing in flight: a run stopped during it
        return f"Confirmation race · stopped after {verdict.rounds}{of} rounds"
    return f"Confirmation race · round {verdict.rounds + 1}{of}"


def _lines(state: DashboardState, verdict: Confirmation, width: int) -> list[str]:
    """The lines under the table, wrapped to ``width`` cells (a wrapped line goes on indented)."""
    if state.race_partial:
        assert state.race is not None
        found = [
            f"continued: the {state.race.rounds_before} rounds run before this run are not shown live "
            "(attnsearch watch shows the whole race); the verdict comes at its end"
        ]
    elif verdict.finished:
        found = describe_confirmation(verdict)
    else:
        return []
    inner = max(width - 4, 10)
    return [part for line in found for part in textwrap.wrap(line, inner, subsequent_indent="  ") or [""]]


def confirmation_panel_height(state: DashboardState, width: int) -> int:
    """Lines the panel needs at ``width`` columns: the borders, the header, a row per contender and the verdict's
    lines; 0 for a study without a race."""
    verdict = state.confirmation()
    if verdict is None:
        return 0
    return BORDER + max(len(race_rows(state)), 1) + len(_lines(state, verdict, width))


def confirmation_panel(state: DashboardState, *, width: int = 160, height: int | None = None) -> Panel:
    """The race's panel at ``width`` columns; within ``height`` lines the verdict's last lines go first (the
    subtitle says how many and where to read them), then contenders.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> from attnsearch.search.events import ConfirmStarted
        >>> state = DashboardState()
        >>> state.apply(ConfirmStarted(("block3=se", "baseline (nothing placed)"), 3, "1 epoch on 512 images"))
        >>> console = Console(width=80, record=True, file=io.StringIO())
        >>> console.print(confirmation_panel(state, width=80))
        >>> "Confirmation race · round 1 of 3" in console.export_text()
        True
    """
    verdict = state.confirmation()
    if verdict is None:
        return panel(Text("no confirmation race", style="dim"), "Confirmation race", None)
    rows, lines = race_rows(state), _lines(state, verdict, width)
    room = (height - BORDER) if height is not None else len(rows) + len(lines)
    shown_rows = rows[: max(room, 1)]
    shown_lines = lines[: max(room - len(shown_rows), 0)]
    table = panel_table()
    table.add_column("contender", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("rounds", justify="right", no_wrap=True)
    table.add_column("vs baseline", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    styles = {"beats baseline": "bold green", "worse": "red", "reference": "dim", "waiting": "dim"}
    for row in shown_rows:
        style = styles.get(row.status, "yellow" if row.status.startswith(("dropped", "failed")) else "")
        table.add_row(row.label, row.rounds, row.versus, Text(row.status, style=style))
    body: RenderableType = table
    if shown_lines:
        body = Group(table, *(Text(line, no_wrap=True, overflow="ellipsis") for line in shown_lines))
    hidden = len(lines) - len(shown_lines) + len(rows) - len(shown_rows)
    subtitle = f"+{hidden} lines: attnsearch report" if hidden > 0 else _subtitle(state, width)
    return panel(body, _title(state, verdict), subtitle)


def _subtitle(state: DashboardState, width: int) -> str:
    """How the differences are judged, and the race's budget where known and where it fits on the border."""
    said = "paired 95% CI, shared seeds"
    budget = f"{said} · {state.race.budget}" if state.race is not None else said
    return budget if len(budget) <= width - 6 else said
