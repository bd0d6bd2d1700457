"""The dashboard drawn into a capture console at 80x24 and 160x48: what a person reads, not exact bytes."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console
from scenario import scenario, state_of

from attnsearch.dashboard.live import LiveDashboard
from attnsearch.dashboard.state import DashboardState
from attnsearch.dashboard.views import BEST, placement_map_panel, render
from attnsearch.evidence import LEADS, TIE_SENTENCE
from attnsearch.search.events import Note, RunStarted
from attnsearch.space import parse_space


def screen(state: DashboardState, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)
    console.print(render(state, width, height, now=1_200.0))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_every_panel_fits_and_reads(state: DashboardState, width: int, height: int) -> None:
    lines = screen(state, width, height)
    assert len(lines) == height and max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for title in ("attnsearch · tiny", "Running (1)", "Placement map", "Leaderboard (2 complete)"):
        assert title in text
    assert "5/8 done: 2 complete, 1 running, 1 pruned, 1 failed, 1 infeasible" in text
    assert "vgg11_bn · sampler random · pruner median" in text
    assert "Recent events" in text and "diverged" in text  # the failure and its reason
    # the running trial: its placements, epoch 2 of 3, its last score
    assert re.search(r"\b5\s+cpu\s+block3=se\b.*\b2/3\s+62\.5%", text)
    # the placement map: block3 (se best, 75.0 from 1 trial), block5 (eca best); none is a column like others
    map_lines = [line for line in lines if re.search(r"│ block[35] ", line)]
    assert len(map_lines) == 2
    assert f"{BEST}75.0" in map_lines[0] and "50.0" in map_lines[0]
    assert f"{BEST}75.0" in map_lines[1]
    assert "block3=se block5=eca" in text and "75.0%" in text  # the leader


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_a_tie_is_no_star_and_says_so(width: int, height: int) -> None:
    """50% vs 51% on 1000 validation images each: within noise at both slots."""
    lines = screen(state_of(scenario(second=0.51)), width, height)
    assert len(lines) == height and max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    map_lines = [line for line in lines if re.search(r"│ block[35] ", line)]
    assert len(map_lines) == 2 and all("~51.0" in line and BEST not in line for line in map_lines)
    assert f"{LEADS} tie: {TIE_SENTENCE}" in text


def test_the_map_colours_only_separated_differences() -> None:
    """The map's cells in colour: neutral within noise and for the reference; green beyond it."""

    def styles(state: DashboardState) -> dict[str, str]:
        console = Console(width=100, file=io.StringIO(), color_system="truecolor")
        lines = console.render_lines(placement_map_panel(state, width=100), console.options)
        found = {}
        for line in lines:
            text = "".join(segment.text for segment in line)
            if "│ block3 " in text:
                for segment in line:  # a mean, its mark before it, its ± after it (the count is dim)
                    colour = segment.style.color if segment.style else None
                    for token in re.findall(r"[★~]|±?\d+\.\d", segment.text):
                        found[token] = colour.name if colour else ""
        return found

    assert styles(state_of(scenario())) == {"50.0": "", "±3.1": "", BEST: "green", "75.0": "green", "±2.7": "green"}
    assert styles(state_of(scenario(second=0.51))) == {"50.0": "", "±3.1": "", LEADS: "", "51.0": ""}


def test_a_large_terminal_is_used(state: DashboardState) -> None:
    small, large = screen(state, 80, 24), screen(state, 160, 48)
    assert "elapsed" in small[3] and "elapsed" in large[1]  # the clock shares a line at 160 columns
    events = "\n".join(large)
    assert "pruned" in events and "infeasible" in events and "new best" in events


def test_a_map_taller_than_the_screen_says_what_it_hides() -> None:
    convs = [f"conv{block}_{i}" for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
    slots = {name: ["none", "se", "eca"] for name in convs}  # 13 slots: more than 24 lines can show
    source = {"name": "tall", "backbone": {"name": "vgg16_bn", "width": 0.125}, "slots": slots}
    space = parse_space(source, check_data=False)
    state = state_of([RunStarted(space, target=4, finished=0)])
    text = "\n".join(screen(state, 80, 24))
    assert "Placement map" in text and re.search(r"\+\d+ slots", text)
    assert len(screen(state, 80, 24)) == 24


def test_pareto_panel_with_two_objectives() -> None:
    events = scenario([{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}])
    text = "\n".join(screen(state_of(events), 160, 48))
    assert "Pareto front (1)" in text and "params ↓" in text


def test_narrow_map_keeps_slot_names_and_the_best_marker(state: DashboardState) -> None:
    console = Console(width=40, record=True, file=io.StringIO(), color_system=None)
    console.print(placement_map_panel(state, width=40))
    text = console.export_text()
    assert "block3" in text and "block5" in text and BEST in text


def test_live_dashboard_leaves_the_alternate_screen_and_shows_the_cursor(state: DashboardState) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system="standard")
    with LiveDashboard(state, console=console, refresh_per_second=20) as dashboard:
        dashboard.on_event(Note("hello from a test"))
        deadline = time.monotonic() + 60
        while "hello from a test" not in out.getvalue():  # the ticker redraws (when, a busy machine decides)
            assert time.monotonic() < deadline, "the dashboard never drew the event"
            time.sleep(0.05)
    written = out.getvalue()
    assert written.index("\x1b[?1049h") < written.index("hello from a test") < written.rindex("\x1b[?1049l")
    assert written.rindex("\x1b[?25h") > written.rindex("\x1b[?25l")  # the cursor is shown again at the end


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48), (200, 60)])
def test_the_live_frame_draws_what_the_layout_draws(width: int, height: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live view lays its panels side by side itself, keeping unchanged ones: the screen must not differ."""
    import attnsearch.dashboard.live as live

    monkeypatch.setattr(live.time, "time", lambda: 1_200.0)
    events = scenario([{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}])
    dashboard = LiveDashboard(DashboardState(), screen=False)
    for i, event in enumerate(events):
        dashboard.on_event(event)
        if i % 3 and i != len(events) - 1:
            continue  # several events between two frames, as on screen
        console = Console(width=width, height=height, file=io.StringIO(), color_system="truecolor")
        ours = cells(console, dashboard._frame, width, height)
        assert ours == cells(console, render(dashboard.state, width, height, now=1_200.0), width, height), i
    assert dashboard.renders >= 3


def cells(console: Console, renderable: object, width: int, height: int) -> list[list[tuple[str, object]]]:
    """What a screen shows: each cell's character and style (however the segments happen to be cut)."""
    options = console.options.update(width=width, height=height)
    lines = console.render_lines(renderable, options)
    return [[(char, segment.style) for segment in line for char in segment.text] for line in lines]
