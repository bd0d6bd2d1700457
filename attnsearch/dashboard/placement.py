"""The dashboard's placement map: slot x module, the mean score of each placement with its noise, judged honestly.

A slot's best module is marked ★ only where its lead over the runner-up is separated (the 95% interval of their
difference excludes 0, :meth:`attnsearch.results.StudyResults.verdicts`); the leader of any other slot is marked ~
and the panel says "no module separated at this budget". Colours are noise-aware (:func:`attnsearch.evidence.shading`):
a cell whose difference from its slot's reference (``none``, or the slot's mean where ``none`` was not tried) is
within noise is drawn neutral; only a separated difference is green (better) or red (worse), the strong shade for
one of half the map's span or more. :mod:`attnsearch.dashboard.views` lays this panel out with the others.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from ..evidence import BEST, LEADS, TIE_SENTENCE, Shade, mark
from ..record import PERCENT_METRICS
from ..results import SlotScore
from .formatting import panel, panel_table
from .state import DashboardState

__all__ = ["BEST", "LEADS", "PALETTE", "colour", "placement_map_height", "placement_map_panel"]

# much worse .. much better than the slot's reference; the middle (no colour): within noise, or the reference itself
PALETTE = ("red", "dark_orange", "", "green_yellow", "green")


def placement_map_panel(state: DashboardState, *, rows: int = 20, width: int = 160) -> Panel:
    """Slot x module grid: mean score of the complete trials with that placement, ± the 95% half-width of that mean
    where its noise is known, and their count; 'none' (nothing placed) is a column like the others. Marks and
    colours as the module's note says; a last line says "~ tie: no module separated at this budget" when a slot
    is a tie.

    Within ``width`` columns the ± and the counts' parentheses go, then the module names are shortened.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> console = Console(width=60, record=True, file=io.StringIO())
        >>> console.print(placement_map_panel(DashboardState(), width=60))
        >>> "no slots yet" in console.export_text()
        True
    """
    metric = state.objectives[0][0]
    compact = _map_width(state, compact=False) > width
    modules, grid = _map_cells(state, compact=compact)
    shorten = _map_width(state, compact=compact) > width
    table = panel_table()
    table.add_column("slot", no_wrap=True, style="bold", min_width=max((len(s) for s in grid), default=4))
    for module in modules:
        cells = max((row[module].cell_len for row in grid.values()), default=1)
        table.add_column(module, justify="right", no_wrap=True, max_width=max(cells, 4) if shorten else None)
    names = list(grid)
    for slot in names[:rows]:
        table.add_row(slot, *(grid[slot][m] for m in modules))
    unit = f"mean {metric}{' %' if metric in PERCENT_METRICS else ''}"
    unit += f" · n · {BEST} separated" if compact else f" ± 95% (n), {BEST} separated best"
    hidden = len(names) - rows
    subtitle = unit + (f", +{hidden} slots" if hidden > 0 else "")
    body: RenderableType = table if names else Text("no slots yet", style="dim")
    if names and _ties(state):
        body = Group(table, Text(f"{LEADS} tie: {TIE_SENTENCE}", style="dim", no_wrap=True, overflow="ellipsis"))
    return panel(body, "Placement map", subtitle)


def placement_map_height(state: DashboardState, rows: int) -> int:
    """Lines the map takes with ``rows`` slot rows: those, the header, the border and the tie line if any."""
    return rows + 3 + (1 if state.slot_modules() and _ties(state) else 0)


def _ties(state: DashboardState) -> bool:
    return any(not verdict.separated for verdict in state.verdicts().values())


def _map_cells(state: DashboardState, *, compact: bool) -> tuple[list[str], dict[str, dict[str, Text]]]:
    """Module columns ('none' first) and slot -> module -> the cell's text."""
    slots = state.slot_modules()
    modules = list(dict.fromkeys(m for ms in slots.values() for m in ms))
    if "none" in modules:  # the baseline first
        modules.remove("none")
        modules.insert(0, "none")
    found, shades = state.placement_map(), state.shading().cells
    grid: dict[str, dict[str, Text]] = {}
    for slot, tried in slots.items():
        row = grid.setdefault(slot, {})
        for module in modules:
            cell = found.get(slot, {}).get(module)
            if module not in tried:
                row[module] = Text("")
            elif cell is None:
                row[module] = Text("·", style="dim")
            else:
                shade = shades.get(slot, {}).get(module)
                row[module] = _cell(state, cell, shade, mark(state.results, slot, module), compact=compact)
    return modules, grid


def _map_width(state: DashboardState, *, compact: bool) -> int:
    """Columns the placement map needs with full module names: slot names, cells, two spaces between columns (a
    cell's padding on each side), the border and its padding."""
    modules, grid = _map_cells(state, compact=compact)
    slot_width = max((len(s) for s in grid), default=4)
    widths = [max([len(m), *(row[m].cell_len for row in grid.values())]) for m in modules]
    return slot_width + sum(w + 2 for w in widths) + 4


def colour(shade: Shade | None) -> str:
    """The colour of a cell: neutral within noise (and for the reference), else green or red by its tone."""
    if shade is None or shade.is_reference or shade.within_noise or shade.tone == 0.0:
        return PALETTE[2]
    if shade.tone > 0.0:
        return PALETTE[4] if shade.tone >= 0.5 else PALETTE[3]
    return PALETTE[0] if shade.tone <= -0.5 else PALETTE[1]


def _cell(state: DashboardState, cell: SlotScore, shade: Shade | None, marked: str, *, compact: bool) -> Text:
    percent = state.objectives[0][0] in PERCENT_METRICS
    hue = colour(shade)
    style = " ".join(s for s in ("bold" if marked == BEST else "", hue) if s)
    text = Text(marked, style=style)
    text.append(f"{100 * cell.mean:.1f}" if percent else f"{cell.mean:.3g}", style=style)
    interval = cell.interval
    if interval is not None and not compact:
        half = (interval[1] - interval[0]) / 2.0
        text.append(f"±{100 * half:.1f}" if percent else f"±{half:.2g}", style=hue)
    text.append(f" {cell.count}" if compact else f" ({cell.count})", style="dim")
    return text
