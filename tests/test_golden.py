"""The honest views of two old studies, pinned byte for byte.

``tests/golden`` holds two tiny studies finished by attnsearch before trial records had a schema (a 3 x 2 grid with
two repeats; a two-objective random search with infeasible and reused trials). Their records carry no recorded
noise (no ``val_images``, so no binomial standard error): a cell's noise is known only from the spread of two or
more trials, and a slot with single trials has no interval. The expected outputs next to them are the run's
closing tables, ``attnsearch report``'s terminal tables and ``summary.md``, and one ``watch`` frame.

They were written by the typed results model's version and regenerated deliberately for issue #15 (honest
verdicts): no slot of either study is separated, so no module is starred, every slot reads as a tie ("no module
separated at this budget", its leader marked ~), and every difference is shown with its 95% interval or said to
have none. The studies' own ``summary.json`` files are the old version's: :func:`test_summary_json` names what
changed in them on purpose. Any other change to these bytes is a change in what users see: regenerate only on
purpose, after reading the new files.
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
    after = plain(results.summary(kept=store.kept_weights()))
    # issue #15, deliberate: noise in every score. Each trial row gains val_acc_se and val_images (None: these records
    # predate them); each module cell of a slot its standard error and interval; each slot its verdict (leader,
    # runner-up, their difference and its interval, separated), and `best` names the leader only where the lead is
    # separated: it is in no slot of these studies, whose old `best` was the leader
    for row in [after["best"], *after["leaderboard"], *after.get("pareto", [])]:
        assert row.pop("val_acc_se") is None and row.pop("val_images") is None
    for slot, verdict in after["slots"].items():
        old = before["slots"][slot]
        assert verdict["best"] is None and verdict.pop("separated") is False and verdict.pop("leader") == old["best"]
        verdict["best"] = old["best"]
        low_high = verdict.pop("interval")
        assert verdict.pop("difference") is None or low_high is None or low_high[0] <= 0.0 <= low_high[1]
        assert verdict.pop("runner_up") in (*verdict["modules"], None)
        for cell in verdict["modules"].values():
            assert {cell.pop("se") is None, cell.pop("interval") is None} in ({True}, {False})
    assert after == before


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
