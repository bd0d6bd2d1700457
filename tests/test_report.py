"""`attnsearch report` and `attnsearch watch` on a small finished study."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnsearch.cli import main
from attnsearch.report import build_report
from attnsearch.search.runner import run_search
from attnsearch.space import parse_space

GRID = {  # 3 x 2 placements: each module at block3 is paired with none there twice, eca at block5 three times
    "name": "grid",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["none", "se", "eca"], "block5": ["none", "eca"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 128, "val_size": 64},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "search": {"sampler": "grid", "n_trials": 1, "pruner": "none"},
    "execution": {"threads": 1},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    run_search(parse_space(GRID), results=results, on_event=None)
    return results / "grid"


def journal(folder: Path) -> tuple[bytes, int]:
    path = folder / "journal.log"
    return path.read_bytes(), path.stat().st_mtime_ns


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# ------------------------------------------------------------------------------------------------ the report


def test_report_terminal_files_and_read_only(study: Path, tmp_path: Path) -> None:
    before = journal(study)
    done = invoke("report", str(study), "--out", str(tmp_path / "out"))
    assert done.exit_code == 0, done.output
    assert journal(study) == before  # nothing appended, not even touched
    text = done.output
    for title in ("Leaderboard (6 complete)", "Placement map", "Effect of each module against none", "95% CI"):
        assert title in text
    assert "paired, 2 pairs" in text and "paired, 3 pairs" in text  # the grid pairs every placement
    report = build_report(study)
    assert {(e.slot, e.module, e.method) for e in report.effects} == {
        ("block3", "se", "paired"),
        ("block3", "eca", "paired"),
        ("block5", "eca", "paired"),
    }
    assert ("tie" in text) == any(e.tie for e in report.effects)
    for e in report.effects:
        assert e.tie == (e.low <= 0 <= e.high)
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
    assert "## Leaderboard" in summary and "| slot | none | se | eca |" in summary
    assert "| slot | module | difference | 95% CI | tie | basis |" in summary and "paired, 2 pairs" in summary


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


def test_report_html_is_one_self_contained_page_with_the_plots(study: Path, tmp_path: Path) -> None:
    assert invoke("report", str(study), "--out", str(tmp_path)).exit_code == 0
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


def test_report_goes_into_the_results_folder_by_default(study: Path, tmp_path: Path) -> None:
    copy = tmp_path / "grid"
    shutil.copytree(study, copy)
    assert invoke("report", str(copy)).exit_code == 0
    assert (copy / "report" / "report.html").is_file()


# ------------------------------------------------------------------------------------------------ watch


def test_watch_once_renders_and_writes_nothing(study: Path) -> None:
    before = journal(study)
    done = invoke("watch", str(study), "--once")
    assert done.exit_code == 0, done.output
    assert journal(study) == before
    assert "attnsearch · grid" in done.output and "6/6 done: 6 complete" in done.output
    assert "Placement map" in done.output and "ETA done" in done.output


def test_state_read_back_from_the_folder(study: Path) -> None:
    from attnsearch.dashboard.watch import StudyReader

    state = StudyReader(study).read()
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
        ("foreign journal", "holds no study named 'grid'"),
    ],
)
def test_bad_folders_are_one_line_and_exit_2(study: Path, tmp_path: Path, damage: str, message: str) -> None:
    folder = tmp_path / "grid"
    if damage != "missing":
        shutil.copytree(study, folder)
    if damage == "no space":
        (folder / "space.yaml").unlink()
    elif damage == "foreign space":
        (folder / "space.yaml").write_text(yaml.safe_dump({"hello": "world"}))
    elif damage == "corrupt trial":
        (folder / "trials" / "3" / "trial.json").write_text('{"number": 3, "state": ')
    elif damage == "foreign journal":
        space = yaml.safe_load((folder / "space.yaml").read_text())
        (folder / "space.yaml").write_text(yaml.safe_dump({**space, "name": "other"}))
        message = "holds no study named 'other'"
    for command in ("watch", "report"):
        done = invoke(command, str(folder), *(["--once"] if command == "watch" else []))
        assert done.exit_code == 2, done.output
        assert done.output.count("\n") == 1 and done.output.startswith("attnsearch: error: ")
        assert message in done.output
    assert not (folder / "report").exists()
