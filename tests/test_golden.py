"""What a user sees of a study did not change with the typed results model.

``tests/golden`` holds two tiny studies finished by attnsearch before trial records had a schema (a 3 x 2 grid with
two repeats; a two-objective random search with infeasible and reused trials), with what that version printed and
wrote for them: the run's closing tables, ``attnsearch report``'s terminal tables and ``summary.md``, and one
``watch`` frame. This version reads the same folders and must give the same bytes.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from attnsearch.dashboard.views import render
from attnsearch.dashboard.watch import StudyReader
from attnsearch.record import TrialRecord
from attnsearch.report import build_report, print_report, write_report
from attnsearch.results import StudyResults
from attnsearch.schema import plain
from attnsearch.search.log import print_summary
from attnsearch.search.store import ResultsStore

GOLDEN = Path(__file__).parent / "golden"
STUDIES = ["golden", "golden-pareto"]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The watch frame shows event times in local time: the golden frame was drawn in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def console(width: int = 120, height: int | None = None) -> Console:
    return Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)


@pytest.mark.parametrize("name", STUDIES)
def test_summary_json(name: str) -> None:
    store = ResultsStore(GOLDEN / name)
    results = StudyResults.from_store(store)
    before = json.loads((store.root / "summary.json").read_text())
    if "pareto" in before:
        # the one change, deliberate: the Pareto set leaves out trials that reused another trial's score, as the
        # leaderboard, the dashboard and export always did (Optuna's best_trials, used before, kept them)
        reused = {r.number for r in results.records.values() if r.reused_from is not None}
        assert reused and any(row["number"] in reused for row in before["pareto"])
        before["pareto"] = [row for row in before["pareto"] if row["number"] not in reused]
    assert plain(results.summary(kept=store.kept_weights())) == before


@pytest.mark.parametrize("name", STUDIES)
def test_closing_tables(name: str) -> None:
    out = console()
    print_summary(StudyResults.from_store(GOLDEN / name), out)
    assert out.export_text() == (GOLDEN / f"{name}.closing.txt").read_text()


@pytest.mark.parametrize("name", STUDIES)
def test_report_tables_and_markdown(name: str, tmp_path: Path) -> None:
    report = build_report(GOLDEN / name)
    out = console()
    print_report(report, out)
    assert out.export_text() == (GOLDEN / f"{name}.report.txt").read_text()
    written = write_report(report, tmp_path)
    assert written[3].read_text() == (GOLDEN / f"{name}.summary.md").read_text()


@pytest.mark.parametrize("name", STUDIES)
def test_watch_frame(name: str) -> None:
    out = console(140, 40)
    out.print(render(StudyReader(GOLDEN / name).read(), 140, 40, now=0.0))
    assert out.export_text() == (GOLDEN / f"{name}.watch.txt").read_text()


@pytest.mark.parametrize("name", STUDIES)
def test_records_keep_their_keys_and_gain_a_schema(name: str) -> None:
    for path in sorted((GOLDEN / name).glob("trials/*/trial.json")):
        before = json.loads(path.read_text())
        assert "schema" not in before  # written before records had a version
        record = TrialRecord.from_json(path.read_bytes(), str(path))
        after = record.to_dict()
        # every key kept, the schema added; a reused trial's own start time (it has none) written as null
        assert set(after) - set(before) <= {"schema", "started", "phase", "split"} and set(before) <= set(after)
        assert after["schema"] == 1 and after["metrics"] == before["metrics"] and after["history"] == before["history"]
        # the candidate is the same but for the pruner's setting, which left the recipe
        assert before["candidate"]["train"].pop("first_val_epoch") >= 1
        assert after["candidate"] == before["candidate"]
        assert TrialRecord.from_dict(json.loads(record.to_json()), str(path)) == record
