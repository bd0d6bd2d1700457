"""The dashboard's panels: pure functions from a :class:`DashboardState` to rich renderables, and the screen layout.

Nothing here keeps state or touches the terminal; :class:`attnsearch.dashboard.live.LiveDashboard` shows what
:func:`render` returns. Every panel takes the number of rows it may use, so :func:`render` can fit an 80x24
terminal (smaller panels, the least useful ones dropped) and fill a 160x48 one. How a value is written (a
duration, a count, placements) is :mod:`attnsearch.dashboard.formatting`'s; the placement map, which judges
placements against their noise, is :mod:`attnsearch.dashboard.placement`'s (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..record import PERCENT_METRICS
from .formatting import format_duration, format_placements, format_seconds, format_si, spread_line
from .formatting import panel as _panel
from .formatting import panel_table as _table
from .placement import BEST, PALETTE, _map_width, placement_map_height, placement_map_panel
from .race_panel import confirmation_panel, confirmation_panel_height
from .state import DashboardState

__all__ = [
    "BEST",
    "PALETTE",
    "confirmation_panel",
    "events_panel",
    "header_panel",
    "leaderboard_panel",
    "pareto_panel",
    "placement_map_panel",
    "render",
    "running_panel",
]

KIND_STYLES = {
    "best": "bold green",
    "pruned": "yellow",
    "failed": "bold red",
    "infeasible": "magenta",
    "reused": "dim",
    "resumed": "cyan",
    "note": "cyan",
    "stale": "bold red",
    "confirm": "cyan",  # the confirmation race began
    "round": "cyan",  # one of its seed rounds is over
    "dropped": "yellow",  # a contender wholly behind the leader
    "confirmed": "bold green",  # its verdict
}
STATE_STYLES = {
    "complete": "green",
    "running": "cyan",
    "pruned": "yellow",
    "failed": "red",
    "infeasible": "magenta",
    "stale": "bold red",  # read back: recorded as running by a process that is gone
}
WIDE = 120  # from this width on, two columns of panels
LEADERS = 20  # rows of the leaderboard at most: a table of more costs more to draw than it tells


def header_panel(state: DashboardState, *, now: float | None = None, width: int = 160) -> Panel:
    """Study, backbone, sampler and pruner, elapsed time and ETA, trial counts against the target, throughput.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> console = Console(width=80, record=True, file=io.StringIO())
        >>> from attnsearch.results import StudyResults
        >>> state = DashboardState(StudyResults(name="demo", target=12))
        >>> console.print(header_panel(state, now=0.0, width=80))
        >>> "0/12 done" in console.export_text()
        True
    """
    now = time.time() if now is None else now
    counts = state.counts()
    arrows = " ".join(f"{metric} {'↑' if d == 'maximize' else '↓'}" for metric, d in state.objectives)
    setup = Text.assemble(
        (", ".join(state.backbones) or "waiting for the run to start", "bold"),
        f" · sampler {state.sampler or '-'} · pruner {state.pruner or '-'} · {arrows}",
    )
    tally = Text.assemble((f"{counts['done']}/{state.target or '?'} done", "bold"), ": ")
    for i, key in enumerate(("complete", "running", "pruned", "failed", "infeasible")):
        tally.append(", " if i else "")
        tally.append(f"{counts[key]} {key}", STATE_STYLES[key] if counts[key] else "dim")
    if counts.get("stale"):
        tally.append(", ")
        tally.append(f"{counts['stale']} stale", STATE_STYLES["stale"])
    rate, images, eta = state.trials_per_hour(now), state.images_per_second(), state.eta(now)
    clock = Text.assemble(
        "elapsed ",
        (format_duration(state.elapsed(now)), "bold"),
        "  ETA ",
        (_eta_text(state, eta) if state.target else "-", "bold"),
    )
    speed = Text("- trials/h" if rate is None else f"{rate:.{0 if rate >= 100 else 1}f} trials/h")
    speed.append(f" · {images:,.0f} img/s" if images is not None else " · - img/s")
    inner = max(width - 4, 10)  # inside the border and its padding
    if width >= WIDE:
        lines = [spread_line(setup, clock, inner), spread_line(tally, speed, inner)]
    else:  # one line each, the clock and the speed sharing the last
        lines = [setup, tally, spread_line(clock, speed, inner)]
    for line in lines:
        line.truncate(inner, overflow="ellipsis")
    body = Text("\n").join(lines)
    return Panel(body, title=f"[bold]attnsearch[/] · {state.name or '…'}", title_align="left", box=box.ROUNDED)


def _eta_text(state: DashboardState, eta: float | None) -> str:
    """``done``; ``stopped`` for a study read back with nothing in flight short of its target (no pace to go on);
    else the time left at this run's pace."""
    if state.confirm_running:
        return "confirming"  # the search is done; the race goes on
    if eta == 0 and not state.running:
        return "done"
    if state.ended is not None and not state.running:
        return "stopped"
    return format_duration(eta)


def running_panel(state: DashboardState, *, rows: int = 8, bar_width: int = 12) -> Panel:
    """One row per running trial: worker, placements, a progress bar over epochs, the last validation score; then
    the confirmation race's (numbered apart: ``c<n>``, placements ``confirm r<round> <label>``); then the stale
    ones (read back: recorded as running by a process that is gone), marked so, where the bar stopped."""
    table = _table()
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("worker", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("placements", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("progress", no_wrap=True)
    table.add_column("epoch", justify="right", no_wrap=True)
    table.add_column("val_acc", justify="right", no_wrap=True)  # what the runner reports each epoch
    # (trial, confirmation trial?, stale?)
    trials = [(t, False, False) for t in sorted(state.running.values(), key=lambda r: r.number)]
    trials += [(t, True, False) for t in sorted(state.confirm_running.values(), key=lambda r: r.number)]
    trials += [(t, False, True) for t in sorted(state.stale.values(), key=lambda r: r.number)]
    trials += [(t, True, True) for t in sorted(state.confirm_stale.values(), key=lambda r: r.number)]
    hosts = {t.host for t, _, _ in trials if t.host}
    for trial, confirming, stale in trials[:rows]:
        worker: str | Text = trial.device or "-"
        if len(hosts) > 1:
            worker += f"@{trial.host}"
        if stale:
            worker = Text("stale", style=STATE_STYLES["stale"])
        table.add_row(
            f"c{trial.number}" if confirming else str(trial.number),
            worker,
            trial.label if confirming else format_placements(trial.placements),
            ProgressBar(total=max(trial.epochs, 1), completed=trial.epoch, width=bar_width),
            f"{trial.epoch}/{trial.epochs or '?'}",
            state.format_score(trial.value, "val_acc"),
        )
    hidden = len(trials) - rows
    subtitle = f"+{hidden} more" if hidden > 0 else None
    body: RenderableType = table if trials else Text("nothing running", style="dim")
    stales = len(state.stale) + len(state.confirm_stale)
    stale = f" · {stales} stale" if stales else ""
    return _panel(body, f"Running ({len(state.running) + len(state.confirm_running)}){stale}", subtitle)


def leaderboard_panel(state: DashboardState, *, rows: int = 10) -> Panel:
    """The best complete trials: placements, score (mean ± spread over repeats), params, FLOPs, training time."""
    metric = state.objectives[0][0]
    table = _table()
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column("placements", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column(metric, justify="right", no_wrap=True)
    for metric_name, _ in state.objectives[1:]:
        table.add_column(metric_name, justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("FLOPs", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    results = state.results
    ranked = results.ranked()
    for rank, record in enumerate(ranked[:rows], 1):
        values = results.values(record) or ()
        score = state.format_score(values[0] if values else None)
        spread = state.spread(record)
        if state.repeats > 1 and spread is not None:
            score += f" ± {100 * spread:.1f}" if metric in PERCENT_METRICS else f" ± {spread:.3g}"
        extra = zip(values[1:], state.objectives[1:], strict=False)
        others = [state.format_score(value, name) for value, (name, _) in extra]
        table.add_row(
            str(rank),
            str(record.number),
            record.label or format_placements(results.placed(record)),
            score,
            *others,
            format_si(record.metrics.params),
            format_si(record.metrics.flops),
            format_seconds(record.metrics.train_seconds),
            style="bold" if rank == 1 else None,
        )
    reused = results.reused
    body: RenderableType = table if ranked else Text("no complete trial yet", style="dim")
    return _panel(body, f"Leaderboard ({len(ranked)} complete{f', {reused} reused' if reused else ''})", None)


def pareto_panel(state: DashboardState, *, rows: int = 8) -> Panel:
    """The non-dominated trials when the study has two or more objectives."""
    front = state.pareto()
    table = _table()
    table.add_column("trial", justify="right", no_wrap=True)
    for metric, direction in state.objectives:
        table.add_column(f"{metric} {'↑' if direction == 'maximize' else '↓'}", justify="right", no_wrap=True)
    table.add_column("placements", ratio=1, no_wrap=True, overflow="ellipsis")
    for row in front[:rows]:
        found = state.results.values(row) or ()
        values = [state.format_score(v, m) for v, (m, _) in zip(found, state.objectives, strict=True)]
        table.add_row(str(row.number), *values, format_placements(state.results.placed(row)))
    body: RenderableType = table if front else Text("no complete trial yet", style="dim")
    return _panel(body, f"Pareto front ({len(front)})", None)


def events_panel(state: DashboardState, *, rows: int = 8) -> Panel:
    """The latest events, newest last: pruned trials, failures with their reasons, each new best."""
    lines = list(state.events)[-rows:] if rows > 0 else []
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for line in lines:
        label = "new best" if line.kind == "best" else line.kind
        grid.add_row(
            time.strftime("%H:%M:%S", time.localtime(line.at)),
            f"#{line.trial}" if line.trial is not None else "",
            Text(label, style=KIND_STYLES.get(line.kind, "")),
            line.text,
        )
    body: RenderableType = grid if lines else Text("nothing yet", style="dim")
    return _panel(body, "Recent events", None)


def render(state: DashboardState, width: int, height: int, *, now: float | None = None) -> Layout:
    """The whole screen for a ``width`` x ``height`` terminal: a Layout named header, running, leaderboard,
    placement_map, pareto and events (the last two only when they fit and, for the front, when it exists), and
    confirmation for a study with a confirmation race: under the running trials, above the leaderboard on a wide
    screen; on a narrow one in place of the placement map, the leaderboard and events taking what is left.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> console = Console(width=80, height=24, record=True, file=io.StringIO())
        >>> console.print(render(DashboardState(), 80, 24))
        >>> "Placement map" in console.export_text()
        True
    """
    now = time.time() if now is None else now
    wide = width >= WIDE
    head = 4 if wide else 5
    root = Layout(name="root")
    body = Layout(name="body")
    root.split_column(Layout(header_panel(state, now=now, width=width), name="header", size=head), body)
    space = max(height - head, 0)
    in_flight = len(state.running) + len(state.stale) + len(state.confirm_running) + len(state.confirm_stale)
    running = min(in_flight, max(1, space // 4))
    running_size = running + 3 if running else 3
    slots = max(len(state.slot_modules()), 1)
    multi = len(state.objectives) > 1
    bar = 20 if wide else 10
    if wide:
        right_width = min(max(_map_width(state, compact=False), 56), width // 2)
        left, right = Layout(name="left"), Layout(name="right", size=right_width)
        body.split_row(left, right)
        race = _race_size(state, width - right_width, space - running_size - 5)
        lefts = [
            Layout(_Lazy(lambda: running_panel(state, rows=running, bar_width=bar)), name="running", size=running_size)
        ]
        if race:
            lefts.append(_race_layout(state, width - right_width, race))
        board = min(max(space - running_size - race - 3, 1), LEADERS)
        lefts.append(Layout(_Lazy(lambda: leaderboard_panel(state, rows=board)), name="leaderboard"))
        left.split_column(*lefts)
        tie_line = placement_map_height(state, 0) - 3  # the map's "no module separated" line, when it has one
        map_rows = min(slots, max(space // 2 - 3 - tie_line, 1))
        map_height = placement_map_height(state, map_rows)
        panes = [
            Layout(
                _Lazy(lambda: placement_map_panel(state, rows=map_rows, width=right_width)),
                name="placement_map",
                size=map_height,
            )
        ]
        rest = space - map_height
        if multi:
            front = min(max(len(state.pareto()), 1), max(rest // 2 - 3, 1))
            panes.append(Layout(_Lazy(lambda: pareto_panel(state, rows=front)), name="pareto", size=front + 3))
            rest -= front + 3
        panes.append(Layout(_Lazy(lambda: events_panel(state, rows=max(rest - 2, 0))), name="events"))
        right.split_column(*panes)
        return root
    # one column: running, placement map, leaderboard; the front and the events only where room is left
    leaders_min = 5  # a leaderboard of two rows
    race = _race_size(state, width, space - running_size)
    if race:
        body.split_column(*_narrow_race(state, width, space, running, running_size, race, bar))
        return root
    tie_line = placement_map_height(state, 0) - 3
    map_rows = min(slots, max(space - running_size - leaders_min - 3 - tie_line, 1))
    map_height = placement_map_height(state, map_rows)
    rest = space - running_size - map_height
    panes = [
        Layout(_Lazy(lambda: running_panel(state, rows=running, bar_width=bar)), name="running", size=running_size),
        Layout(
            _Lazy(lambda: placement_map_panel(state, rows=map_rows, width=width)),
            name="placement_map",
            size=map_height,
        ),
    ]
    wanted = max(len(state.ranked()), 1) + 3  # the leaderboard with every complete trial
    front = 0
    if multi and rest >= leaders_min + 4:
        front = min(max(len(state.pareto()), 1) + 3, max(4, rest // 3))
    events = min(len(state.events) + 2, max(rest - front - wanted, rest // 3))
    if events < 3 or rest - front - events < leaders_min:
        events = 0
    leaders = rest - front - events
    panes.append(
        Layout(_Lazy(lambda: leaderboard_panel(state, rows=max(leaders - 3, 1))), name="leaderboard", size=leaders)
    )
    if front:
        panes.append(Layout(_Lazy(lambda: pareto_panel(state, rows=front - 3)), name="pareto", size=front))
    if events:
        panes.append(Layout(_Lazy(lambda: events_panel(state, rows=events - 2)), name="events", size=events))
    body.split_column(*panes)
    return root


def _race_size(state: DashboardState, width: int, room: int) -> int:
    """Lines for the race's panel: what it needs at ``width``, within ``room`` (never under 4); 0 without a race."""
    needed = confirmation_panel_height(state, width)
    return min(needed, max(room, 4)) if needed else 0


def _race_layout(state: DashboardState, width: int, size: int) -> Layout:
    return Layout(_Lazy(lambda: confirmation_panel(state, width=width, height=size)), name="confirmation", size=size)


def _narrow_race(
    state: DashboardState, width: int, space: int, running: int, running_size: int, race: int, bar: int
) -> list[Layout]:
    """One column during (and after) a confirmation race: running, the race, then the leaderboard (two rows at
    least) and the events where room is left; lines too few for either go to the race's panel."""
    rest = space - running_size - race
    leaders, events = (rest, 0) if rest >= 5 else (0, rest if rest >= 3 else 0)
    if leaders:
        events = min(len(state.events) + 2, rest // 2)
        events = events if events >= 3 and rest - events >= 5 else 0
        leaders = rest - events
    race += rest - leaders - events
    panes = [
        Layout(_Lazy(lambda: running_panel(state, rows=running, bar_width=bar)), name="running", size=running_size),
        _race_layout(state, width, race),
    ]
    if leaders:
        board = Layout(_Lazy(lambda: leaderboard_panel(state, rows=leaders - 3)), name="leaderboard", size=leaders)
        panes.append(board)
    if events:
        panes.append(Layout(_Lazy(lambda: events_panel(state, rows=events - 2)), name="events", size=events))
    return panes


# ------------------------------------------------------------------------------------------------ helpers


class _Lazy:
    """A panel built when it is first drawn: the live view, which keeps the lines of panels whose content has not
    changed, then never builds those again."""

    def __init__(self, build: Callable[[], RenderableType]) -> None:
        self.build = build
        self.built: RenderableType | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.built is None:
            self.built = self.build()
        yield self.built
