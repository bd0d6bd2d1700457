"""The one owner of rich's ``Live``: shows :func:`attnsearch.dashboard.views.render` of a state, a few times a second.

Events only change the state (under a lock, from any thread); a ticker thread asks Live to redraw at most
``refresh_per_second`` times a second, and only when the frame would differ: the state changed, the terminal was
resized, or the clock moved on a second (then only the header is rendered again). The dashboard uses the
terminal's alternate screen: whatever ends the run (its end, an error, Ctrl-C or another stop signal: SIGTERM,
SIGHUP, see :mod:`attnsearch.signals`) gives the terminal back as it was, with the cursor shown, and the
end-of-run tables print into the normal screen. A terminal that is gone (writing to it fails, EIO after a
hang-up) stops the drawing, never the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.segment import Segment

from .state import DashboardState
from .views import header_panel, render

if TYPE_CHECKING:
    from ..search.events import Event

__all__ = ["LiveDashboard"]


class LiveDashboard:
    """A context manager that shows the dashboard while a run feeds it Events through :meth:`on_event`.

    Example:
        >>> from attnsearch.search.runner import run_search  # doctest: +SKIP
        >>> with LiveDashboard() as dashboard:  # doctest: +SKIP
        ...     result = run_search(space, on_event=dashboard.on_event)
    """

    def __init__(
        self,
        state: DashboardState | None = None,
        *,
        console: Console | None = None,
        refresh_per_second: float = 4.0,
        screen: bool = True,
    ) -> None:
        self.state = state or DashboardState()
        self.refresh_per_second = refresh_per_second
        self._lock = threading.Lock()  # guards the state: events may come from any thread
        self._frame = _Frame(self)
        # rich's own auto-refresh would rewrite the whole screen 4 times a second even when nothing changed
        # (~5 ms each at 160x48); the ticker below asks Live to refresh only when the frame would differ
        self._live = Live(console=console or Console(), screen=screen, auto_refresh=False, get_renderable=self._get)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.gone = False  # writing to the terminal failed (it was closed): nothing more is drawn

    def __enter__(self) -> LiveDashboard:
        self._live.start(refresh=True)
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="attnsearch-dashboard", daemon=True)
        self._ticker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        try:
            self._live.stop()  # leaves the alternate screen and shows the cursor
        except OSError:  # the terminal is gone: there is nothing to give back
            self.gone = True

    def on_event(self, event: Event) -> None:
        """Take one runner event into the state; safe from any thread, draws nothing itself."""
        with self._lock:
            self.state.apply(event)

    def show(self, state: DashboardState) -> None:
        """Replace the whole state (``attnsearch watch`` reads a fresh one from disk on each tick)."""
        with self._lock:
            self.state = state

    @property
    def renders(self) -> int:
        """Frames rendered so far (a clock tick that only redraws the header counts too)."""
        return self._frame.renders

    def _get(self) -> _Frame:
        return self._frame

    def _tick(self) -> None:
        console = self._live.console
        while not self._stop.wait(1.0 / self.refresh_per_second):
            size = console.size
            if self._frame.stale(size.width, size.height):
                try:
                    self._live.refresh()
                except OSError:  # the terminal is gone (EIO after a hang-up): the run goes on undrawn
                    self.gone = True
                    return


class _Frame:
    """The renderable Live draws, rendered again only where something a person sees changed.

    A new state version or terminal size builds the Layout again, but each panel whose content is unchanged
    (see :func:`_contents`) reuses its lines; when only the clock moved on, just the header is rendered again.
    """

    def __init__(self, owner: LiveDashboard) -> None:
        self.owner = owner
        self.key: tuple[int, int, int, int] | None = None  # state, its version, width, height
        self.second = -1
        self.layout: Layout | None = None
        self.lines: list[list[Segment]] = []
        self.panels: dict[str, tuple[Hashable, list[list[Segment]]]] = {}  # panel name -> (its key, its lines)
        self.renders = 0

    def stale(self, width: int, height: int) -> bool:
        with self.owner._lock:
            state = self.owner.state
            key = (id(state), state.version, width, height)
        return key != self.key or int(time.time()) != self.second

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or console.size.height
        now = time.time()
        with self.owner._lock:
            state = self.owner.state
            key = (id(state), state.version, width, height)
            if key != self.key or self.layout is None:
                self.layout = render(state, width, height, now=now)
                contents = _contents(state)
                for leaf in _leaves(self.layout):
                    if leaf.name in contents:
                        leaf.update(_Cached(self, leaf.name, contents[leaf.name], leaf.renderable))
                self.lines = self._compose(console, self.layout, width, height)
            elif int(now) != self.second:
                header = self.layout["header"]
                header.update(header_panel(state, now=now, width=width))
                size = header.size or 0
                self.lines[:size] = _render_lines(console, header, width, size)
            else:
                return _joined(self.lines)
            self.key, self.second = key, int(now)
            self.renders += 1
            return _joined(self.lines)

    def _compose(self, console: Console, layout: Layout, width: int, height: int) -> list[list[Segment]]:
        """The frame's lines, each panel's rectangle rendered (or taken from the cache) and laid side by side.

        The same result as rendering the Layout, without passing every kept line through rich's line splitting
        twice more; falls back to that where rich's region map is not there.
        """
        regions = getattr(layout, "_make_region_map", None)
        if regions is None:
            return _render_lines(console, layout, width, height)
        rows: list[list[Segment]] = [[] for _ in range(height)]
        for leaf, region in regions(width, height).items():
            if leaf.children:
                continue
            options = console.options.update_dimensions(region.width, region.height)
            if isinstance(leaf.renderable, _Cached):
                lines = leaf.renderable.lines(console, options)
            else:
                lines = console.render_lines(leaf.renderable, options)
            for row, line in zip(rows[region.y : region.y + region.height], lines, strict=False):  # screen-cut
                row.extend(line)
        return [list(Segment.simplify(row)) for row in rows]


class _Cached:
    """A panel whose lines are kept while its content key and its size stay the same."""

    def __init__(self, frame: _Frame, name: str, key: Hashable, renderable: RenderableType) -> None:
        self.frame, self.name, self.key, self.renderable = frame, name, key, renderable

    def lines(self, console: Console, options: ConsoleOptions) -> list[list[Segment]]:
        """The panel's lines at this size: kept from an earlier frame when its content and size are the same."""
        key = (self.key, options.max_width, options.height)
        kept = self.frame.panels.get(self.name)
        if kept is None or kept[0] != key:
            kept = (key, console.render_lines(self.renderable, options))
            self.frame.panels[self.name] = kept
        return kept[1]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        return _joined(self.lines(console, options))


def _contents(state: DashboardState) -> dict[str, Hashable]:
    """What each panel (but the header, which shows the clock) draws, as a value to compare. The confirmation race's
    panel is not kept: it is drawn again for every new state (a few lines)."""
    setup = (state.name, tuple(state.objectives), state.repeats, tuple(map(tuple, state.slot_modules().items())))
    running = tuple(
        (kind, r.number, r.epoch, r.epochs, r.value, r.device, r.host, r.label)
        for kind, trials in (
            ("search", state.running),
            ("confirm", state.confirm_running),
            ("stale", state.stale),
            ("confirm stale", state.confirm_stale),
        )
        for r in trials.values()
    )
    results = state.results
    trials = tuple(
        (r.number, r.state, results.values(r), state.spread(r), r.label, r.metrics, r.reused_from)
        for r in results.finished()
    )
    events = tuple(state.events)
    return {
        "running": (setup, running),
        "leaderboard": (setup, trials),
        "placement_map": (setup, trials),
        "pareto": (setup, trials),
        "events": events,
    }


def _leaves(layout: Layout) -> list[Layout]:
    if not layout.children:
        return [layout]
    return [leaf for child in layout.children for leaf in _leaves(child)]


def _render_lines(console: Console, renderable: RenderableType, width: int, height: int) -> list[list[Segment]]:
    lines = console.render_lines(renderable, console.options.update(width=width, height=height))
    return [list(Segment.simplify(line)) for line in lines]  # fewer segments: a cheaper redraw


def _joined(lines: list[list[Segment]]) -> Iterator[Segment]:
    new_line = Segment.line()
    for i, line in enumerate(lines):
        if i:
            yield new_line
        yield from line
