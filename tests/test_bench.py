"""Benchmarks: each runs in a tiny configuration and returns well-formed figures; no assertion on speed."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attnsearch.attention.self_attention import SelfAttention
from attnsearch.bench import bench_memory, bench_overhead, bench_search, bench_trainer
from attnsearch.bench.memory import NaiveSelfAttention, saved_bytes
from attnsearch.bench.search import (
    GridPoint,
    SearchGrid,
    SearchTrace,
    TraceTrial,
    evaluate_grid,
    simulate_search,
)
from attnsearch.cli import main

# the overhead benchmark's study: 2 epochs of 64 images in batches of 32 (4 steps), TPE with the median pruner
OVERHEAD = {
    "data": {"train_size": 64, "val_size": 32},
    "train": {"optimizer": "adamw", "lr": 0.003},
    "search": {"sampler": "tpe", "pruner": "median"},
}


def test_trainer_reports_positive_rates_and_sane_ratios() -> None:
    bench = bench_trainer(backbone="vgg11_bn", width=0.125, image_size=32, batch_size=8, steps=2, rounds=2, workers=0)
    assert [p.pipeline for p in bench.pipelines] == [
        "train_model",
        "hand-written loop, float tensors",
        "train_model, crop + flip",
        "DataLoader, per-sample transforms",
        "train_model, seed recipe (kornia)",
        "DataLoader + kornia on the batch",
    ]
    for pipeline in bench.pipelines:
        assert len(pipeline.rounds) == 2 and all(r > 0 for r in pipeline.rounds)
        assert pipeline.images_per_second > 0
    assert len(bench.comparisons) == 3
    for comparison in bench.comparisons:
        assert 0.01 < comparison.ratio < 100
        ours, baseline = comparison.ours_images_per_second, comparison.baseline_images_per_second
        assert comparison.ratio_of_medians == pytest.approx(ours / baseline)
        speeds = {p.pipeline: p.rounds for p in bench.pipelines}
        rounds = [a / b for a, b in zip(speeds[comparison.ours], speeds[comparison.baseline], strict=True)]
        assert min(rounds) <= comparison.ratio <= max(rounds)  # the median of the rounds' ratios
    assert bench.config["dataloader"]["num_workers"] == 0
    json.dumps(bench.to_dict())


def test_overhead_times_every_piece_of_a_real_trial(tiny_space_file: Callable[..., Path]) -> None:
    bench = bench_overhead(space_file=tiny_space_file(**OVERHEAD), trials=2, epochs=2)
    names = [p.part for p in bench.parts]
    assert names[0].startswith("ask") and names[1:4] == [
        "build",
        "costs (count, latency)",
        "first-batch warm-up and set-up",
    ]
    assert {
        "evaluation, epochs before the last",
        "evaluation, last epoch (the score)",
        "report + prune",
        "worker bookkeeping",
        "tell (tell, the final record)",
    } <= set(names)
    assert ("dashboard" in names) == bench.config["dashboard"]
    assert bench.steps == 4  # 2 epochs of 64 images in batches of 32
    assert bench.training_ms > 0
    for part in bench.parts:
        assert len(part.per_trial) == 2 and all(math.isfinite(v) for v in part.per_trial)
        assert part.milliseconds >= 0
    # a first step faster than the median one (a noisy machine) counts as training: no negative warm-up
    assert min(next(p for p in bench.parts if p.part.startswith("first-batch")).per_trial) >= 0
    assert bench.fixed_ms == pytest.approx(sum(p.milliseconds for p in bench.parts))
    assert 0 < bench.fixed_share_without_eval < bench.fixed_share_score_as_work < bench.fixed_share < 1
    assert set(bench.per_run_ms) == {"load dataset", "run start (folder, study, records)", "run end (summary)"}
    # the trials ran through the real loop: a study's folder was made and measured, each piece timed from outside
    assert bench.config["trials"] == 2 and bench.config["storage"].startswith("JournalStorage")


def test_overhead_dashboard_probe_draws_a_frame_per_tick_with_changes(
    tiny_space: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from types import SimpleNamespace

    from attnsearch.bench import overhead_probes
    from attnsearch.bench.overhead import _DashboardProbe, _EventProbe
    from attnsearch.search.events import Note, RunStarted
    from attnsearch.space import parse_space

    dashboard = _DashboardProbe.create()
    assert dashboard is not None and dashboard.tick == 0.25  # the live view's 4 ticks a second
    # the test moves the probe's clock from one tick to the next itself: ticks of 1000 s that no slow moment of a
    # busy machine can split or skip; the time each piece of work takes is still measured by the real clock
    dashboard.tick = 1000.0
    skipped = [0.0]
    monkeypatch.setattr(overhead_probes, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + skipped[0]))
    probe = _EventProbe(dashboard)

    def next_tick() -> None:
        now = overhead_probes.time.perf_counter()
        skipped[0] += dashboard.tick - now % dashboard.tick + 1.0  # 1 s into the next tick

    probe(RunStarted(parse_space(tiny_space(**OVERHEAD)), target=2, finished=0))
    next_tick()
    probe(Note("first"))  # the run event's tick is over: its frame is drawn now
    assert [c.frame for c in probe.calls] == [False, True] and dashboard.header_seconds > 0
    next_tick()
    for i in range(3):  # one tick, one frame, drawn when a later tick begins
        probe(Note(f"burst {i}"))
    assert sum(c.frame for c in probe.calls) == 2
    next_tick()
    probe(Note("later"))
    assert sum(c.frame for c in probe.calls) == 3
    assert all(c.spent >= c.work > 0 for c in probe.calls) and probe.calls[1].spent > probe.calls[1].work
    # the clock redraws the header in the seconds without a frame: 10 seconds, 3 frames
    assert probe.clock_seconds(10.0, frames=3) == pytest.approx(7 * dashboard.header_seconds)


def test_overhead_measures_whole_trials_even_when_the_pruner_says_stop(
    tiny_space_file: Callable[..., Path], monkeypatch
) -> None:
    import optuna

    asked = []
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: asked.append(1) or True)
    bench = bench_overhead(space_file=tiny_space_file(**OVERHEAD), trials=2, epochs=2)
    assert len(asked) == 4  # asked after both epochs of both trials (2 epochs: the pruner judges from epoch 1)
    before_last = next(p for p in bench.parts if p.part == "evaluation, epochs before the last")
    assert all(ms > 0 for ms in before_last.per_trial)  # both trials went on past epoch 1
    assert bench.steps == 4


# ------------------------------------------------------------------------------------------------ search

FAKE = {"slots": {"block2": ["none", "se"], "block3": ["none", "se"], "block4": ["none", "se"]}, "train": {"epochs": 3}}


@pytest.fixture
def fake_grid(tiny_space: Callable[..., dict]) -> SearchGrid:
    # 8 candidates; each 'se' adds to the score, and block4=se most: the best is se everywhere (0.90 at the end).
    # Curves rise by epoch and keep their order, so a median pruner can tell the weak ones early.
    points = []
    for combo in itertools.product(["none", "se"], repeat=3):
        final = 0.5 + 0.05 * (combo[0] == "se") + 0.1 * (combo[1] == "se") + 0.25 * (combo[2] == "se")
        curve = (final - 0.2, final - 0.1, final)
        points.append(GridPoint(dict(zip(["block2", "block3", "block4"], combo, strict=True)), curve))
    return SearchGrid(tiny_space(**FAKE), points)


def test_trace_regret_and_compute_to_reach() -> None:
    trace = SearchTrace(
        [
            TraceTrial({"a": 1}, "complete", 3, 0.70, 3),
            TraceTrial({"a": 2}, "pruned", 1, None, 4),
            TraceTrial({"a": 3}, "complete", 3, 0.85, 7),
            TraceTrial({"a": 3}, "reused", 0, 0.85, 7),
        ]
    )
    assert trace.compute == 7
    assert trace.best_within(2) is None and trace.regret(0.9, 2) == math.inf
    assert trace.best_within(6) == 0.70 and trace.regret(0.9, 6) == pytest.approx(20.0)
    assert trace.regret(0.9, 7) == pytest.approx(5.0)
    assert trace.compute_to_reach(0.8) == 7 and trace.compute_to_reach(0.7) == 3
    assert trace.compute_to_reach(0.95) == math.inf


def test_simulated_search_charges_pruned_trials_only_their_epochs(fake_grid: SearchGrid) -> None:
    grid = fake_grid
    assert grid.best == pytest.approx(0.9) and grid.compute == 24
    trace = simulate_search(
        grid, sampler="random", pruner="median", seed=0, n_trials=8, max_compute=grid.compute, max_trials=40
    )
    states = {t.state for t in trace.trials}
    assert "pruned" in states and "complete" in states
    spent = 0
    for t in trace.trials:
        spent += t.epochs
        assert t.compute == spent  # cumulative compute is the epochs actually trained
        point = grid.point(t.params)
        if t.state == "complete":
            assert t.epochs == 3 and t.value == point.curve[-1]
        elif t.state == "pruned":
            assert 1 <= t.epochs <= 3 and t.value is None
        else:
            assert t.state == "reused" and t.epochs == 0 and t.value == point.curve[-1]
    assert any(t.state == "pruned" and t.epochs < 3 for t in trace.trials)
    # a complete candidate proposed again costs nothing
    completed = [tuple(sorted(t.params.items())) for t in trace.trials if t.state == "complete"]
    assert len(completed) == len(set(completed))
    # regret as defined: the grid's best minus the best complete trial within the budget, in points
    found = max(t.value for t in trace.trials if t.value is not None and t.compute <= 12)
    assert trace.regret(grid.best, 12) == pytest.approx((grid.best - found) * 100)


def test_simulated_search_without_pruning_trains_every_trial_in_full(fake_grid: SearchGrid) -> None:
    grid = fake_grid
    trace = simulate_search(grid, sampler="tpe", pruner="none", seed=1, n_trials=4, max_compute=12, max_trials=40)
    assert {t.state for t in trace.trials} <= {"complete", "reused"}
    assert all(t.epochs == 3 for t in trace.trials if t.state == "complete")
    assert trace.compute >= 12 or len(trace.trials) == 40


def test_bench_search_on_a_hand_made_grid(fake_grid: SearchGrid) -> None:
    bench = bench_search(grids=[fake_grid], seeds=3)
    assert [m.method for m in bench.methods] == ["tpe + median pruning", "tpe", "random", "random + median pruning"]
    assert bench.grid["candidates"] == 8 and bench.grid["compute"] == 24 and bench.grid["within_target"] == 1
    for method in bench.methods:
        assert list(method.regret) == ["10%", "25%", "50%"]
        assert all(v >= 0 for v in method.regret.values())
        assert len(method.per_seed_compute_to_target) == 3
        assert method.reached == sum(math.isfinite(c) for c in method.per_seed_compute_to_target)
        # a search starts trials while it has spent less than the grid's compute: the last may end 3 epochs past it
        assert all(c < 24 + 3 for c in method.per_seed_compute_to_target if math.isfinite(c))


def test_quick_grid_is_trained_once_then_read_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "grid.json"
    bench = bench_search(quick=True, seeds=2, grid_seeds=1, cache=cache)
    assert bench.grid["candidates"] == 4 and bench.grid["cached"] == [False]
    assert bench.grid["compute"] == 4 * bench.grid["epochs"]
    again, cached = evaluate_grid(bench.config["space"], cache=cache)
    assert cached and again.best == bench.grid["best_val_acc"]
    assert all(len(p.curve) == bench.grid["epochs"] and all(0 <= v <= 1 for v in p.curve) for p in again.points)


# ------------------------------------------------------------------------------------------------ memory


def test_naive_self_attention_computes_the_same_function() -> None:
    ours = SelfAttention(16)
    torch.nn.init.constant_(ours.gamma, 0.7)
    x = torch.randn(2, 16, 6, 5)
    torch.testing.assert_close(NaiveSelfAttention(ours)(x), ours(x), atol=1e-5, rtol=1e-4)


def test_naive_memory_grows_quadratically_and_ours_linearly() -> None:
    bench = bench_memory(sizes=(16, 32), batch_size=2, channels=64, repeats=1)
    saved = {(r.module, r.size): r.saved_bytes for r in bench.rows}
    assert all(r.step_ms is not None and r.step_ms > 0 for r in bench.rows)
    # 4x the positions: the N x N matrices make the naive version grow ~16x, ours and linear ~4x
    assert saved[("naive bmm-softmax", 32)] > 8 * saved[("naive bmm-softmax", 16)]
    assert saved[("self_attention", 32)] < 6 * saved[("self_attention", 16)]
    assert saved[("linear_attention", 32)] < 6 * saved[("linear_attention", 16)]


def test_memory_skips_what_would_not_fit() -> None:
    bench = bench_memory(sizes=(8, 32), batch_size=1, channels=8, repeats=1, max_attention_bytes=2**20)
    naive = {r.size: r for r in bench.rows if r.module == "naive bmm-softmax"}
    assert naive[8].saved_bytes is not None and naive[32].saved_bytes is None and "GiB" in naive[32].skipped


def test_saved_bytes_counts_activations_not_weights() -> None:
    assert saved_bytes(torch.nn.Linear(4, 4), torch.randn(8, 4)) == 8 * 4 * 4


# ------------------------------------------------------------------------------------------------ command line


def test_bench_commands_print_json_and_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})  # a table wide enough not to wrap its cells
    memory = runner.invoke(
        main, ["bench", "memory", "--sizes", "8,16", "--batch-size", "1", "--channels", "8", "--json"]
    )
    assert memory.exit_code == 0, memory.output
    rows = json.loads(memory.stdout)["rows"]
    assert {r["module"] for r in rows} == {"self_attention", "naive bmm-softmax", "linear_attention"}
    saved = json.loads((tmp_path / "results" / "benchmarks" / "memory.json").read_text())
    assert saved["benchmark"] == "memory" and saved["machine"]["torch"] == torch.__version__
    table = runner.invoke(main, ["bench", "search", "--quick", "--seeds", "2", "--grid-seeds", "2", "--no-save"])
    assert table.exit_code == 0, table.output
    assert "tpe + median pruning" in table.stdout and "regret @25%" in table.stdout
    assert "2 training seed(s)" in table.stdout and "seeds 0 and 1: Kendall" in table.stdout
    assert "grid, training seed 1 (2/2), 4/4: " in table.stderr  # progress, with its ETA
    assert not (tmp_path / "results" / "benchmarks" / "search_quick.json").exists()
    assert (tmp_path / "results" / "benchmarks" / "search_grid.json").exists()  # the cache, saved or not
    bad = runner.invoke(main, ["bench", "memory", "--sizes", "8,x"])
    assert bad.exit_code == 2


def test_bench_overhead_table_weighs_the_goal_both_ways(tiny_space_file: Callable[..., Path]) -> None:
    space = tiny_space_file(**OVERHEAD)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(main, ["bench", "overhead", "--space", str(space), "--trials", "1", "--no-save"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # a tiny trial is mostly fixed cost: both verdicts must say so
    assert any(line.startswith("fixed, every evaluation counted: ") and line.endswith("not met") for line in lines)
    reading = "fixed, the score's pass counted as work: "
    assert any(line.startswith(reading) and line.endswith("not met") for line in lines)
    assert any(line.startswith("without any evaluation: ") for line in lines)
    assert "evaluation, last epoch (the score)" in result.stdout
