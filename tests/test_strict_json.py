"""Every JSON the project writes is standard JSON, which strict parsers (browsers, Node, jq) read: each writer is
given NaN and infinities, and every ``*.json`` it writes is parsed with NaN, Infinity and -Infinity refused."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from attnsearch.bench.output import save_json
from attnsearch.bench.search_grid import evaluate_grid
from attnsearch.cli._output import print_json
from attnsearch.record import EpochRecord, Metrics, RepeatRecord
from attnsearch.results import StudyResults
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space

pytestmark = pytest.mark.usefixtures("one_thread")

NON_FINITE = (math.nan, math.inf, -math.inf)


def strict(text: str) -> Any:
    """``text`` parsed as standard JSON: NaN, Infinity and -Infinity raise."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def strict_files(folder: Path) -> list[Path]:
    """Every ``*.json`` under ``folder``, each parsed strictly (the test fails on the first that is not standard)."""
    found = sorted(folder.rglob("*.json"))
    for path in found:
        strict(path.read_text(encoding="utf-8"))
    return found


def test_strict_parser_refuses_what_python_writes_by_default() -> None:
    with pytest.raises(ValueError, match="NaN"):
        strict(json.dumps({"val_loss": math.nan}))


def test_a_diverged_trial_writes_standard_json(tmp_path: Path, tiny_space: Callable[..., dict]) -> None:
    """The issue's input: sgd at lr 1e4 (a NaN validation loss, a training loss near 1e20): records, summary."""
    space = parse_space(tiny_space(slots={"block3": ["none"]}, train={"epochs": 1, "optimizer": "sgd", "lr": 1.0e4}))
    run_search(space, results=tmp_path, n_trials=1)
    names = {p.name for p in strict_files(tmp_path)}
    assert names == {"trial.json", "summary.json"}


def test_records_summary_and_replays_with_non_finite_values(finished_study: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "study")
    records = ResultsStore(finished_study).read_records()
    bad = []
    for record, value in zip(records, NON_FINITE * 2, strict=False):
        history = tuple(replace(e, train_loss=value, val_loss=value) for e in record.history) or (
            EpochRecord(1, value, 0.5, None, value, 10, 0.1, 1.0, 0.5),
        )
        bad.append(
            replace(
                record,
                metrics=replace(record.metrics, val_loss=value, train_loss=value, val_acc_std=value, latency_ms=value),
                history=history,
                repeats=(RepeatRecord(0, "complete", 0.5, None, value, value, value, 1),),
                timings={"train": value, "total": 1.0},
            )
        )
    for record in bad:
        store.write_record(record)
    results = StudyResults.from_store(finished_study)
    for record in bad:
        results = results.with_record(record)
    store.write_summary(results.summary())
    store.write_replay("0-lr-nan", replace(bad[0], replay_of=0, overrides={"lr": math.nan}), None)
    written = strict_files(tmp_path)
    assert len(written) == len(bad) + 2  # the records, the summary, the replay
    for record in bad:  # every record written reads back, its values that were not finite absent
        again = store.read_record(record.number)
        assert again.metrics.val_loss is None and again.metrics.latency_ms is None and "train" not in again.timings
    assert store.read_summary_objectives() == (("val_acc", "maximize"),)


def test_benchmark_files_are_standard_json(tmp_path: Path) -> None:
    path = save_json(
        "demo",
        {"ratio": math.nan, "rates": [1.0, math.inf, -math.inf], "nested": {"seconds": (math.nan, 2.0)}},
        tmp_path,
    )
    data = strict(path.read_text(encoding="utf-8"))
    assert data["ratio"] is None and data["rates"] == [1.0, None, None] and data["nested"] == {"seconds": [None, 2.0]}


def test_the_search_grid_cache_is_rewritten_as_standard_json(tmp_path: Path, tiny_space: Callable[..., dict]) -> None:
    """An older cache holding NaN (json.dumps' default) is rewritten standard when a new grid is added to it."""
    cache = tmp_path / "search_grid.json"
    cache.write_text(json.dumps({"old": {"space": {}, "points": [], "torch": "x", "seconds": math.nan}}))
    space = tiny_space(slots={"block3": ["none"]}, train={"epochs": 1}, data={"train_size": 64, "val_size": 32})
    grid, cached = evaluate_grid(space, cache=cache, threads=1)
    assert not cached and len(grid.points) == 1
    data = strict(cache.read_text(encoding="utf-8"))
    assert data["old"]["seconds"] is None and len(data) == 2


def test_json_printed_by_the_commands_is_standard(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` output (replay, bench, inspect), often saved to a file or piped to jq."""
    print_json({"metric": "val_acc", "spearman": math.nan, "trials": [{"recorded": math.inf, "metrics": Metrics()}]})
    data = strict(capsys.readouterr().out)
    assert data == {"metric": "val_acc", "spearman": None, "trials": [{"recorded": None, "metrics": {}}]}
