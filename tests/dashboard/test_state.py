"""DashboardState fed by Events: counts, running trials, the placement map, the front, recent events."""

from __future__ import annotations

import io
import threading

from scenario import candidate, scenario, state_of, trial
from rich.console import Console

from attnsearch.dashboard.live import LiveDashboard
from attnsearch.dashboard.state import RECENT, DashboardState
from attnsearch.search.events import Note


def test_counts_running_and_finished_trials(state: DashboardState) -> None:
    assert state.name == "tiny" and state.backbones == ["vgg11_bn"] and state.target == 8
    assert (state.sampler, state.pruner) == ("random", "median")
    counts = state.counts()
    assert counts == {"complete": 2, "pruned": 1, "failed": 1, "infeasible": 1, "running": 1, "done": 5}
    (running,) = state.running.values()
    assert (running.number, running.epoch, running.epochs, running.value, running.device) == (5, 2, 3, 0.625, "cpu")
    assert running.placements == {"block3": "se", "block5": "none"}
    records = state.results.records
    failed = records[3]
    assert failed.state == "failed" and failed.reason == "diverged" and state.results.score(failed) is None
    assert len(records[2].history) == 1  # pruned after its first epoch
    assert [record.number for record in state.ranked()] == [1, 0]
    assert state.results.placed(records[1]) == {"block3": "se", "block5": "eca"}
    assert records[1].metrics.params == 150_000


def test_placement_map_means_counts_and_best_cells(state: DashboardState) -> None:
    grid = state.placement_map()
    assert grid["block3"]["none"].mean == 0.50 and grid["block3"]["none"].count == 1
    assert grid["block3"]["se"].mean == 0.75
    assert "cbam" not in grid["block3"]  # only pruned and infeasible trials placed it: no score
    assert grid["block5"]["eca"].count == 1 and grid["block5"]["none"].count == 1
    assert state.best_cells() == {"block3": "se", "block5": "eca"}
    assert state.slot_modules() == {"block3": ["none", "se", "cbam"], "block5": ["none", "eca"]}


def test_rates_and_clock() -> None:
    events = scenario()
    state = state_of(events)  # the run began at t=1000, events 10 s apart
    now = 1_000.0 + 10 * len(events)
    assert state.elapsed(now) == 10 * len(events)
    assert state.trials_per_hour(now) == 3600 * 5 / (10 * len(events))
    assert state.eta(now) == 3 * 10 * len(events) / 5  # 3 to go at the pace of 5 done so far
    assert state.images_per_second() == 900.0


def test_recent_events_name_reasons_and_stay_bounded(state: DashboardState) -> None:
    lines = [(e.kind, e.trial, e.text) for e in state.events]
    assert ("best", 1, "block3=se block5=eca  val_acc 75.00%") in lines
    assert any(kind == "failed" and number == 3 and text.startswith("diverged") for kind, number, text in lines)
    assert any(kind == "pruned" and "epoch 1/3" in text for kind, _, text in lines)
    assert any(kind == "infeasible" and "max_params" in text for kind, _, text in lines)
    for i in range(3 * RECENT):
        state.apply(Note(f"note {i}"))
    assert len(state.events) == RECENT and state.events[-1].text == f"note {3 * RECENT - 1}"


def test_pareto_front_with_two_objectives() -> None:
    events = scenario([{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}])
    state = state_of(events)
    assert [row.number for row in state.pareto()] == [1]  # same params as trial 0, better accuracy: dominates
    # worse accuracy, fewer parameters: on the front too
    for event in trial(6, candidate(block5="eca"), "finished", 0.60, params=100_000):
        state.apply(event)
    assert [row.number for row in state.pareto()] == [1, 6]
    assert state.results.values(state.results.records[6]) == (0.60, 100_000.0)


def test_one_objective_has_no_front(state: DashboardState) -> None:
    assert state.pareto() == []


def test_events_from_many_threads_are_all_taken() -> None:
    dashboard = LiveDashboard(console=Console(file=io.StringIO(), width=80, height=24))
    events = scenario()
    dashboard.on_event(events[0])
    before = dashboard.state.version
    notes = [Note(f"{i}") for i in range(400)]

    def send(part: list[Note]) -> None:
        for event in part:
            dashboard.on_event(event)

    threads = [threading.Thread(target=send, args=(notes[i::4],)) for i in range(4)]
    with dashboard:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert dashboard.state.version == before + 400  # every note taken, none lost to a race
