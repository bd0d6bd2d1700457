"""The confirmation race in every view (issue #15): the live dashboard fed the race's events, ``watch`` reading a
folder with its records (plain and ``--storage``), and ``report`` (terminal, summary.md, report.html).

Nothing is trained: the race is told by hand (tests/race_scenario.py): block3=se beats the baseline, block3=se
block5=eca is not separated from it, block3=cbam is dropped after round 2.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import race_scenario as rs
from click.testing import CliRunner
from rich.console import Console
from scipy import stats

from attnsearch.cli import main
from attnsearch.dashboard.live import LiveDashboard
from attnsearch.dashboard.state import DashboardState
from attnsearch.dashboard.views import render
from attnsearch.dashboard.watch import StudyReader
from attnsearch.record import WorkerInfo
from attnsearch.report import build_report, print_report, write_report
from attnsearch.report_confirm import TEST_COLUMN
from attnsearch.search.events import ConfirmEnded, ConfirmStarted
from attnsearch.search.shared import ATTR, RECORD_ATTR
from attnsearch.search.store import ResultsStore

MID_RACE = (2, 1)  # round 2, its second trial (block3=se block5=eca) started, at its first epoch
VERDICT = [
    "block3=se beats the baseline by +2.4 pt [1.2, 3.7] over 3 seeds",
    "block3=se block5=eca: +0.8 pt [-2.3, 4.0] over 3 seeds: not separated",
    "block3=cbam: -7.7 pt [-16.6, 1.2] over 2 seeds: not separated (dropped after round 2: behind the leader)",
]
SIZES = [(80, 24), (140, 40)]


def live(upto: tuple[int, int] | None = None) -> DashboardState:
    state = DashboardState()
    for i, event in enumerate(rs.events(upto)):
        state.apply(event, now=rs.T0 + i)
    return state


def screen(state: DashboardState, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)
    console.print(render(state, width, height, now=rs.T0 + 600))
    lines = console.export_text().rstrip("\n").split("\n")
    assert len(lines) == height and max(len(line) for line in lines) <= width
    return lines


def inside(lines: list[str]) -> str:
    """The screen's text with the panels' borders taken out, lines joined by spaces (a wrapped line reads on)."""
    cells = [re.sub(r"[│╭╮╰╯─]", " ", line) for line in lines]
    return " ".join(" ".join(cell.split()) for cell in cells)


def panel_text(lines: list[str], title: str) -> str:
    """The text inside the panel whose title starts with ``title`` (as :func:`inside` writes it), wherever the
    panel sits on the screen."""
    top = next(i for i, line in enumerate(lines) if f"╭─ {title}" in line)
    left = lines[top].index(f"╭─ {title}")
    right = lines[top].index("╮", left)
    bottom = next(i for i in range(top + 1, len(lines)) if lines[i][left] == "╰")
    return inside([line[left : right + 1] for line in lines[top : bottom + 1]])


def row(lines: list[str], label: str) -> str:
    """The race panel's row of ``label``: the first line that starts with it inside a border, up to the border's
    other side, its cells one space apart."""
    found = [line for line in lines if re.match(rf"│ {re.escape(label)}\s", line)]
    assert found, label
    return " ".join(found[0][: found[0].index("│", 1) + 1].split())


# ---------------------------------------------------------------------------------------------- the live dashboard


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_a_race_in_progress_shows_its_trials_and_contenders(width: int, height: int) -> None:
    state = live(MID_RACE)
    lines = screen(state, width, height)
    text = "\n".join(lines)
    # the search is over and counts none of the race's trials: 6 complete, none running, 6 on the leaderboard
    assert "6/6 done: 6 complete, 0 running" in text and "Leaderboard (6 complete)" in text
    assert "ETA confirming" in text and "Running (1)" in text
    # the running confirmation trial: its own number, its round and placements, epoch 1 of 2
    assert re.search(r"│ c5\s+cpu\s+confirm r2 bloc.*\b1/2\b", text)
    assert "Confirmation race · round 2 of 3" in text
    # one difference per contender has no interval yet: "-" (block3=se has two rounds, the baseline one)
    assert row(lines, "block3=se").endswith("2 - in │")
    assert row(lines, "block3=cbam").endswith("1 - in │")
    assert re.search(r"│ baseline \(nothi.*\s1\s+-\s+reference\s+│", text)
    assert state.results.done == 6 and sorted(state.confirm_running) == [5] and not state.running


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_a_finished_race_shows_its_verdict(width: int, height: int) -> None:
    state = live()
    lines = screen(state, width, height)
    text = inside(lines)
    assert "Confirmation race · over after 3 of 3 rounds" in text and "ETA done" in text
    assert "Running (0)" in text and not state.confirm_running
    assert re.search(r"block3=se 3 \+2\.4 pt \[\+1\.2, \+3\.7\] beats baseline", text)
    assert re.search(r"block3=se block5=\S* 3 \+0\.8 pt \[-2\.3, \+4\.0\] not separated", text)
    assert re.search(r"block3=cbam 2 -7\.7 pt \[-16\.6, \+1\.2\] dropped r2", text)
    race = panel_text(lines, "Confirmation race")
    for sentence in VERDICT:  # the verdict's lines, wrapped to the panel
        assert sentence in race, sentence
    assert "test split (2,000 images; reported only, never used to select)" in race


def test_the_race_panel_names_its_budget_where_the_border_holds_it() -> None:
    budget = "paired 95% CI, shared seeds · 2 epochs on 128 training images ─╯"
    assert any(line.endswith(budget) for line in screen(live(), 80, 24))
    # a left column of 58 at 120x36: the budget is left out rather than cut short
    (border,) = [line for line in screen(live(), 120, 36) if "paired 95% CI, shared seeds" in line]
    assert "paired 95% CI, shared seeds ─╯" in border and "epochs" not in border


def test_the_events_panel_has_a_line_per_round_end_and_per_drop(tmp_path: Path) -> None:
    state = live()
    race = [
        (line.kind, line.text) for line in state.events if line.kind in ("confirm", "round", "dropped", "confirmed")
    ]
    assert race == [
        ("confirm", race[0][1]),
        ("round", "round 1 over, leader block3=se; 4 remain"),
        ("round", "round 2 over, leader block3=se; 3 remain"),
        ("dropped", "block3=cbam dropped after round 2: behind the leader"),
        ("round", "round 3 over, leader block3=se; 2 remain"),
        ("dropped", "baseline (nothing placed) dropped after round 3: behind the leader"),
        ("confirmed", "after 3 seed rounds: block3=se beats the baseline"),
    ]
    assert race[0][1].startswith("confirmation race of 4 candidates (block3=se, block3=se block5=eca, block3=cbam")
    text = "\n".join(screen(state, 140, 40))
    assert "round 2 over, leader block3=se; 3 remain" in text and "block3=cbam dropped after round 2" in text
    # read back from a folder, the same lines (the race's records say when each round ended)
    assert [(line.kind, line.text) for line in state.events if line.kind in ("round", "dropped", "confirmed")] == [
        (line.kind, line.text)
        for line in StudyReader(rs.write_folder(tmp_path)).read().events
        if line.kind in ("round", "dropped", "confirmed")
    ]


def test_a_continued_race_says_what_it_has_not_seen_until_its_end() -> None:
    # a run continuing a race after its round 2: its start says so, the records of rounds 1 and 2 are not in events
    events = rs.events()
    verdict = events[-1]
    assert isinstance(verdict, ConfirmEnded)
    start = next(i for i, e in enumerate(events) if isinstance(e, ConfirmStarted))
    third = [e for e in events[start + 1 :] if getattr(getattr(e, "record", None), "confirm_round", 3) == 3]
    began = replace(events[start], rounds_done=2)
    state = DashboardState()
    for event in [*events[:start], began, *third[:2]]:  # round 3's first trial started
        state.apply(event, now=rs.T0)
    assert state.race_partial
    text = inside(screen(state, 80, 24))
    assert "Confirmation race · round 3 of 3" in text
    assert "continued: the 2 rounds run before this run are not shown live" in text
    assert "beats" not in text  # no verdict from what this view has not seen
    state.apply(verdict, now=rs.T0 + 1)  # its end brings the whole verdict
    assert not state.race_partial
    assert VERDICT[0] in inside(screen(state, 80, 24))


def cells(console: Console, renderable: object, width: int, height: int) -> list[list[tuple[str, object]]]:
    options = console.options.update(width=width, height=height)
    lines = console.render_lines(renderable, options)
    return [[(char, segment.style) for segment in line for char in segment.text] for line in lines]


@pytest.mark.parametrize(("width", "height"), [(80, 24), (140, 40)])
def test_the_live_frame_draws_the_race_as_the_layout_does(
    width: int, height: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live view keeps panels whose content is unchanged: a confirmation trial's epochs must still show."""
    import attnsearch.dashboard.live as live_module

    monkeypatch.setattr(live_module.time, "time", lambda: rs.T0 + 600)
    dashboard = LiveDashboard(DashboardState(), screen=False)
    console = Console(width=width, height=height, file=io.StringIO(), color_system="truecolor")
    for event in rs.events():
        dashboard.on_event(event)
        ours = cells(console, dashboard._frame, width, height)
        assert ours == cells(console, render(dashboard.state, width, height, now=rs.T0 + 600), width, height)


# ---------------------------------------------------------------------------------------------- watch


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_watch_once_shows_the_race_of_a_folder(tmp_path: Path) -> None:
    folder = rs.write_folder(tmp_path)
    done = invoke("watch", str(folder), "--once")
    assert done.exit_code == 0, done.output
    assert "Confirmation race · over after 3 of 3 rounds" in done.output
    assert re.search(r"block3=se\s+3\s+\+2\.4 pt \[\+1\.2, \+3\.7\]\s+beats baseline", done.output)
    assert VERDICT[0] in done.output and "6/6 done: 6 complete, 0 running" in done.output


def test_watch_reads_a_changed_confirm_record_again_and_keeps_the_others(tmp_path: Path) -> None:
    folder = rs.write_folder(tmp_path, MID_RACE, worker=WorkerInfo(host="elsewhere", pid=1, device="cpu"))
    reader = StudyReader(folder)
    first = reader.results()
    assert sorted(first.confirm_records) == list(range(6)) and first.confirm_records[5].state == "running"
    store = ResultsStore(folder)
    ended = [record for kind, record in rs.race_records() if kind == "ended" and record.number == 5]
    store.write_record(ended[0])  # the running trial ended
    again = reader.results()
    assert again.confirm_records[5].state == "complete" and again.confirm_records[0] is first.confirm_records[0]
    assert again.confirmation().rounds == 1  # round 2 still waits for the baseline


def gone_process() -> WorkerInfo:
    child = subprocess.Popen(["true"])
    child.wait()
    return WorkerInfo(host=socket.gethostname(), pid=child.pid, device="cpu")


def test_a_confirmation_trial_whose_process_is_gone_is_stale(tmp_path: Path) -> None:
    state = StudyReader(rs.write_folder(tmp_path / "dead", MID_RACE, worker=gone_process())).read()
    assert list(state.confirm_stale) == [5] and not state.confirm_running and not state.stale
    now = time.time()
    assert state.elapsed(now) == state.elapsed(now + 3600)  # no clock kept going by a dead trial
    text = "\n".join(screen(state, 140, 40))
    assert "Running (0) · 1 stale" in text and re.search(r"│ c5\s+stale\s+confirm r2 ", text)
    assert "Confirmation race · stopped after 1 of 3 rounds" in text
    assert any(
        line.kind == "stale" and "left running: confirm r2 block3=se block5=eca" in line.text for line in state.events
    )
    # the same trial alive (this process, started now): running, the race going on
    alive = WorkerInfo(host=socket.gethostname(), pid=os.getpid(), device="cpu")
    state = StudyReader(rs.write_folder(tmp_path / "alive", MID_RACE, worker=alive)).read()
    assert list(state.confirm_running) == [5] and not state.confirm_stale and state.ended is None
    assert "Confirmation race · round 2 of 3" in "\n".join(screen(state, 80, 24))


def test_a_record_under_confirm_that_is_not_a_confirmation_trial_is_one_line(tmp_path: Path) -> None:
    folder = rs.write_folder(tmp_path)
    path = ResultsStore(folder).confirm_record_path(2)
    path.write_text(json.dumps({**json.loads(path.read_text()), "phase": "search"}))
    done = invoke("watch", str(folder), "--once")
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "not a confirmation trial's record" in done.output


def test_watch_with_storage_shows_the_race_too(tmp_path: Path) -> None:
    folder = rs.write_folder(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for record in rs.search_records():  # each trial as the runner keeps it in a shared study
        assert record.candidate is not None and record.metrics.val_acc is not None
        keep = {"candidate": record.candidate.to_dict(), "key": record.candidate.key(), "stamp": record.started}
        study.add_trial(
            optuna.trial.create_trial(
                value=record.metrics.val_acc, user_attrs={ATTR: keep, RECORD_ATTR: record.to_dict()}
            )
        )
    reader = StudyReader(folder, storage=url)
    assert reader.results().done == 6 and len(reader.results().confirm_records) == 11
    done = invoke("watch", str(folder), "--once", "--storage", url)
    assert done.exit_code == 0, done.output
    assert "Confirmation race · over after 3 of 3 rounds" in done.output and VERDICT[0] in done.output


# ---------------------------------------------------------------------------------------------- report


def wilson(acc: float, n: int) -> str:
    ci = stats.binomtest(round(acc * n), n).proportion_ci(method="wilson")
    return f"{100 * acc:.1f}% [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"


def test_report_opens_with_the_race_in_every_form(tmp_path: Path) -> None:
    folder = rs.write_folder(tmp_path)
    report = build_report(folder)
    out = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    print_report(report, out)
    terminal = out.export_text()
    assert terminal.index("Confirmation race (val_acc; 3 of 3 seed rounds finished, over)") < terminal.index(
        "Leaderboard"
    )
    for sentence in VERDICT:
        assert sentence in terminal, sentence
    assert TEST_COLUMN in terminal
    written = write_report(report, tmp_path / "out")
    summary, page = written[3].read_text(), written[0].read_text()
    assert summary.index("## Confirmation race") < summary.index("## Leaderboard")
    header = f"| contender | rounds | vs baseline (pt), 95% CI | dropped in | {TEST_COLUMN} | test images |"
    assert header in summary
    # each contender's test score: the mean over its seeds (validation minus 1 point), Wilson on 2,000 images
    tests = {label: sum(s - 0.01 for s in scores) / len(scores) for label, scores in rs.RACE.items()}
    assert f"| block3=se | 3 | +2.43 [+1.21, +3.66] | - | {wilson(tests['block3=se'], 2000)} | 2,000 |" in summary
    assert f"| block3=cbam | 2 | -7.70 [-16.59, +1.19] | round 2 | {wilson(tests['block3=cbam'], 2000)} |" in summary
    baseline = "baseline (nothing placed)"
    assert f"| {baseline} | 3 | reference | round 3 | {wilson(tests[baseline], 2000)} | 2,000 |" in summary
    for sentence in VERDICT:
        assert sentence in summary and sentence in page, sentence
    assert "<h2>Confirmation race</h2>" in page and f"<th>{TEST_COLUMN}</th>" in page


def test_report_of_a_race_in_progress_says_so(tmp_path: Path) -> None:
    report = build_report(rs.write_folder(tmp_path, MID_RACE, worker=WorkerInfo(host="elsewhere", pid=1)))
    out = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    print_report(report, out)
    text = out.export_text()
    assert "Confirmation race (val_acc; 1 of 3 seed rounds finished, in progress)" in text
    assert "race in progress: 1 of 3 seed rounds finished" in text and "beats the baseline by" not in text


def test_no_race_no_section(tmp_path: Path) -> None:
    report = build_report(Path(__file__).parent / "golden" / "golden")
    out = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    print_report(report, out)
    written = write_report(report, tmp_path)
    for text in (out.export_text(), written[3].read_text(), written[0].read_text()):
        assert "Confirmation race" not in text and TEST_COLUMN not in text
    frame = screen(StudyReader(Path(__file__).parent / "golden" / "golden").read(), 80, 24)
    assert "Confirmation race" not in "\n".join(frame)
