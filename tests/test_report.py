"""`attnsearch report` and `attnsearch watch` on a small finished study."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnsearch.cli import main
from attnsearch.evidence import BEST, TIE_SENTENCE
from attnsearch.report import build_report


def journal(folder: Path) -> tuple[bytes, int]:
    path = folder / "journal.log"
    return path.read_bytes(), path.stat().st_mtime_ns


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# ------------------------------------------------------------------------------------------------ the report


def test_report_terminal_files_and_read_only(finished_study: Path, tmp_path: Path) -> None:
    before = journal(finished_study)
    done = invoke("report", str(finished_study), "--out", str(tmp_path / "out"))
    assert done.exit_code == 0, done.output
    assert journal(finished_study) == before  # nothing appended, not even touched
    text = done.output
    for title in ("Leaderboard (6 complete)", "Placement map", "Effect of each module against none", "95% CI"):
        assert title in text
    assert "paired, 2 pairs" in text and "paired, 3 pairs" in text  # the grid pairs every placement
    report = build_report(finished_study)
    # the grid pairs se and cbam at block3 with none there twice each (block5 none, eca), eca at block5 three times
    assert {(e.slot, e.module, e.method) for e in report.effects} == {
        ("block3", "se", "paired"),
        ("block3", "cbam", "paired"),
        ("block5", "eca", "paired"),
    }
    for e in report.effects:  # one trial per cell carries its binomial noise (val_images): every effect has one
        assert e.low is not None and e.tie == (e.low <= 0 <= e.high)
    assert "Parameter importances" in text
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in text
    # the files
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "history.png", "report.html", "summary.md"]
    for name in ("heatmap.png", "history.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        import matplotlib.image

        assert matplotlib.image.imread(out / name).shape[0] > 100
    summary = (out / "summary.md").read_text()
    assert "## Leaderboard" in summary and "| slot | none | se | cbam | eca |" in summary
    assert "| slot | module | difference | 95% CI | verdict | basis |" in summary and "paired, 2 pairs" in summary
    # each effect's verdict as its interval says, and each slot's verdict as StudyResults.verdicts says
    for e in report.effects:
        verdict = "tie" if e.tie else "differs"
        assert f"| {e.slot} | {e.module} | {100 * e.difference:+.2f} | [{100 * e.low:+.2f}, " in summary
        assert f"{100 * e.high:+.2f}] | {verdict} | {e.basis} |" in summary
    for slot, v in report.results.verdicts().items():
        said = f"{BEST} {v.leader} is best" if v.separated else TIE_SENTENCE
        row = f"| {slot} | {v.leader} | {v.runner_up} |"
        assert [line for line in summary.splitlines() if line.startswith(row) and line.endswith(f"| {said} |")]


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.plots = 0
        self.titles: list[str] = []
        self.inline = 0
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._tag = tag
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "div" and "plotly-graph-div" in (attrs.get("class") or ""):
            self.plots += 1

    def handle_data(self, data: str) -> None:
        if self._tag == "h3":
            self.titles.append(data)
        if self._tag == "script" and "Plotly" in data and len(data) > 1_000_000:
            self.inline += 1


def test_report_html_is_one_self_contained_page_with_the_plots(finished_study: Path, tmp_path: Path) -> None:
    assert invoke("report", str(finished_study), "--out", str(tmp_path)).exit_code == 0
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert page.inline == 1  # plotly.js itself, inlined once
    assert not [s for s in page.scripts if str(s.get("src", "")).startswith(("http:", "https:", "//"))]
    assert page.plots >= 5
    for title in (
        "Placement map",
        "Effect per slot",
        "Optimization history",
        "Parameter importances",
        "Intermediate values",
    ):
        assert title in page.titles


def test_report_goes_into_the_results_folder_by_default(study_copy: Path) -> None:
    assert invoke("report", str(study_copy)).exit_code == 0
    assert (study_copy / "report" / "report.html").is_file()


# ------------------------------------------------------------------------------------------------ watch


def test_watch_once_renders_and_writes_nothing(finished_study: Path) -> None:
    before = journal(finished_study)
    done = invoke("watch", str(finished_study), "--once")
    assert done.exit_code == 0, done.output
    assert journal(finished_study) == before
    assert "attnsearch · tiny" in done.output and "6/6 done: 6 complete" in done.output
    assert "Placement map" in done.output and "ETA done" in done.output


def test_state_read_back_from_the_folder(finished_study: Path) -> None:
    from attnsearch.dashboard.watch import StudyReader

    state = StudyReader(finished_study).read()
    assert state.counts()["complete"] == 6 and not state.running and state.target == 6
    assert state.ended is not None and state.elapsed(state.ended + 1000) == state.ended - state.started
    assert sum(cell.count for cell in state.placement_map()["block3"].values()) == 6
    assert any(line.kind == "best" for line in state.events)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "no such results folder"),
        ("no space", "not a results folder of attnsearch (no space.yaml)"),
        ("foreign space", "not a space of attnsearch"),
        ("corrupt trial", "not a readable trial record"),
        ("foreign journal", "holds no study named 'other'"),
    ],
)
def test_bad_folders_are_one_line_and_exit_2(study_copy: Path, damage: str, message: str) -> None:
    folder = study_copy
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "no space":
        (folder / "space.yaml").unlink()
    elif damage == "foreign space":
        (folder / "space.yaml").write_text(yaml.safe_dump({"hello": "world"}))
    elif damage == "corrupt trial":
        (folder / "trials" / "3" / "trial.json").write_text('{"number": 3, "state": ')
    elif damage == "foreign journal":
        space = yaml.safe_load((folder / "space.yaml").read_text())
        (folder / "space.yaml").write_text(yaml.safe_dump({**space, "name": "other"}))
    for command in ("watch", "report"):
        done = invoke(command, str(folder), *(["--once"] if command == "watch" else []))
        assert done.exit_code == 2, done.output
        assert done.output.count("\n") == 1 and done.output.startswith("attnsearch: error: ")
        assert message in done.output
    assert not (folder / "report").exists()
