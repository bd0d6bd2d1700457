"""`attnsearch report` and `attnsearch watch` on a small finished study; the effect intervals on known numbers."""

from __future__ import annotations

import math
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnsearch.cli import main
from attnsearch.report import build_report, paired_interval, slot_effects, t_quantile, welch_interval
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
T975 = {1: 12.706204736174705, 2: 4.302652729911275, 4: 2.7764451051977987, 10: 2.2281388519649385}


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


# ------------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_tables(df: int) -> None:
    assert t_quantile(0.975, df) == pytest.approx(T975[df], rel=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], rel=1e-9)


def test_intervals_on_hand_made_scores() -> None:
    differences = [0.010, 0.020, 0.045]
    mean, low, high = paired_interval(differences)
    half = T975[2] * statistics.stdev(differences) / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.025, 0.025 - half, 0.025 + half))
    # equal sizes and variances: Welch's df is 2(n-1) = 4
    a, b = [0.80, 0.82, 0.84], [0.70, 0.72, 0.74]
    difference, low, high = welch_interval(a, b)
    half = T975[4] * math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 3)
    assert (difference, low, high) == pytest.approx((0.10, 0.10 - half, 0.10 + half))


def record(number: int, block3: str, block5: str, lr: float = 0.05) -> dict:
    placements = [{"slot": s, "module": m, "params": {}} for s, m in (("block3", block3), ("block5", block5))]
    return {
        "number": number,
        "candidate": {
            "backbone": {"name": "vgg11_bn"},
            "placements": [p for p in placements if p["module"] != "none"],
            "train": {"lr": lr},
        },
    }


def test_effects_are_paired_where_trials_differ_only_at_the_slot() -> None:
    scores = {0: 0.70, 1: 0.72, 2: 0.71, 3: 0.74, 4: 0.60, 5: 0.90, 6: 0.66}
    records = [
        record(0, "none", "none"),
        record(1, "se", "none"),  # block3: pairs with 0, +0.02
        record(2, "none", "eca", lr=0.2),
        record(3, "se", "eca", lr=0.2),  # block3: pairs with 2, +0.03
        record(4, "none", "none", lr=0.1),
        record(5, "cbam", "eca", lr=0.1),  # differs from 4 at both slots: no pair anywhere
        record(6, "none", "eca"),  # block5: pairs with 0, the only block5 pair
    ]
    slots = {"block3": ["none", "se", "cbam"], "block5": ["none", "eca"]}
    effects = {(e.slot, e.module): e for e in slot_effects(records, lambda r: scores[r["number"]], slots)}
    se = effects["block3", "se"]
    assert se.method == "paired" and se.n == 2 and se.basis == "paired, 2 pairs"
    half = T975[1] * statistics.stdev([0.02, 0.03]) / math.sqrt(2)
    assert (se.difference, se.low, se.high) == pytest.approx((0.025, 0.025 - half, 0.025 + half))
    assert se.tie  # two pairs: t(1) = 12.7, the interval is wide
    cbam = effects["block3", "cbam"]  # one trial with cbam: too few for an interval
    assert cbam.method == "too few" and cbam.low is None and not cbam.tie
    assert cbam.difference == pytest.approx(0.90 - statistics.fmean([0.70, 0.71, 0.60, 0.66]))
    eca = effects["block5", "eca"]  # one pair only: unpaired, Welch over all trials
    assert eca.method == "unpaired" and eca.basis == "unpaired (Welch), 4 vs 3 trials"
    difference, low, high = welch_interval([0.71, 0.74, 0.90, 0.66], [0.70, 0.72, 0.60])
    assert (eca.difference, eca.low, eca.high) == pytest.approx((difference, low, high))
    assert eca.tie == (low <= 0 <= high)


def test_an_interval_without_zero_is_not_a_tie() -> None:
    records = [
        record(i, module, other)
        for i, (module, other) in enumerate(
            [("none", "none"), ("se", "none"), ("none", "eca"), ("se", "eca"), ("none", "se"), ("se", "se")]
        )
    ]
    scores = [0.70, 0.75, 0.60, 0.66, 0.50, 0.55]  # se adds 0.05, 0.06, 0.05 in its three pairs
    slots = {"block3": ["none", "se"], "block5": ["none", "eca", "se"]}
    (effect,) = slot_effects(records, lambda r: scores[r["number"]], {"block3": slots["block3"]})
    assert effect.method == "paired" and effect.n == 3 and effect.low > 0 and not effect.tie


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
