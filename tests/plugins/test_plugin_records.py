"""Trial records name the plug-ins their candidate uses; replay, export and explain load them again from there."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from plugin_files import BRIGHTNESS, TWO_STAGE, write
from recorded_study import GATE, PluginStudy, commands, plugin_study

from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from attnsearch.dashboard.watch import StudyReader
from attnsearch.errors import AttnsearchError
from attnsearch.plugin_records import load_recorded, missing_plugins, used_plugins
from attnsearch.plugins import load_plugins, plugin_of
from attnsearch.record import PluginRecord, TrialRecord
from attnsearch.search.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread", "forget_plugins")  # each test unloads what it loads


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> PluginStudy:
    return plugin_study(tmp_path_factory)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_record_names_the_plugins_its_candidate_uses(study: PluginStudy) -> None:
    records = {n: json.loads((study.folder / "trials" / str(n) / "trial.json").read_text()) for n in (0, 1)}
    gate = {
        "name": "attnsearch_plugin_p2_gate",
        "file": str(study.gate.resolve()),
        "sha256": _sha(study.gate),
        "kind": "module",
        "keys": ["p2_gate"],
    }
    numpy_gate = {**gate, "name": "attnsearch_plugin_p2_npgate", "file": str(study.np_gate.resolve())}
    numpy_gate.update(sha256=_sha(study.np_gate), keys=["p2_npgate"])
    by_label = {r["placements"]: r for r in records.values()}
    assert set(by_label) == {"block3=p2_gate", "block3=p2_gate block5=p2_npgate"}
    assert by_label["block3=p2_gate"]["plugins"] == [gate]
    assert by_label["block3=p2_gate block5=p2_npgate"]["plugins"] == [gate, numpy_gate]
    # and they read back as typed records
    again = ResultsStore(study.folder).read_record(records[0]["number"])
    assert all(isinstance(p, PluginRecord) for p in again.plugins) and again.plugins[0].keys == ("p2_gate",)


def test_a_record_without_plugins_reads_and_writes_as_before() -> None:
    record = TrialRecord(4, "complete")
    assert "plugins" not in record.to_dict() and TrialRecord.from_json(record.to_json()).plugins == ()
    old = {"schema": 1, "number": 2, "state": "complete"}  # written before plug-ins existed
    assert TrialRecord.from_dict(old).plugins == ()


def test_a_changed_source_is_one_warning_line(study: PluginStudy) -> None:
    record = ResultsStore(study.folder).read_record(1)
    recorded = replace(record.plugins[0], sha256="0" * 64)
    lines: list[str] = []
    load_recorded([replace(record, plugins=(recorded,))], warn=lines.append)
    assert len(lines) == 1
    assert lines[0].startswith("plug-in attnsearch_plugin_p2_gate changed since trial 1 was trained (sha256 000000")
    assert lines[0].endswith("results may differ") and _sha(study.gate)[:12] in lines[0]
    load_recorded([record], warn=lines.append)  # the recorded hash: no warning
    assert len(lines) == 1


def test_a_plugin_neither_on_disk_nor_importable_is_refused_with_one_line(tmp_path: Path) -> None:
    gone = PluginRecord("attnsearch_plugin_p2_gone", str(tmp_path / "p2_gone.py"), "1" * 64, "module", ("p2_gone",))
    record = TrialRecord(7, "complete", plugins=(gone,))
    assert missing_plugins([record]) == ["attnsearch_plugin_p2_gone"]
    with pytest.raises(AttnsearchError) as err:
        load_recorded([record])
    message = str(err.value)
    assert "\n" not in message and "trial 7 needs plug-in attnsearch_plugin_p2_gone" in message
    assert str(tmp_path / "p2_gone.py") in message and "--plugin" in message


def test_watch_reads_a_plugin_study(study: PluginStudy) -> None:
    results = StudyReader(study.folder).results()
    assert results.counts()["complete"] == 2 and results.best() is not None


def test_report_explain_watch_without_plugin_load_them_from_the_records(study: PluginStudy, tmp_path: Path) -> None:
    # one fresh process, no --plugin: the space names p2_gate and p2_npgate, which the records' files provide
    number = str(ResultsStore(study.folder).read_records()[-1].number)
    report = ["report", str(study.folder), "--out", str(tmp_path / "report")]
    explain = ["explain", str(study.folder), "--trial", number, "--images", "2", "--out", str(tmp_path / "explain")]
    watch = ["watch", str(study.folder), "--once"]
    assert commands(report, explain, watch, cwd=tmp_path) == [(0, ""), (0, ""), (0, "")]
    assert (tmp_path / "report" / "summary.md").read_text().count("p2_npgate") >= 1
    assert [p.name for p in (tmp_path / "explain").iterdir()] == [f"trial-{number}.png"]


def test_a_plugin_whose_file_is_gone_loads_by_its_import_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # installed elsewhere since the search (an entry point's package reinstalled): the recorded file is gone
    (tmp_path / "p2_importable.py").write_text(GATE.replace('"p2_gate"', '"p2_importable_gate"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = (tmp_path / "p2_importable.py").read_bytes()
    recorded = PluginRecord(
        "p2_importable", "/gone/p2_importable.py", hashlib.sha256(data).hexdigest(), "module", ("p2_importable_gate",)
    )
    lines: list[str] = []
    load_recorded([TrialRecord(5, "complete", plugins=(recorded,))], warn=lines.append)
    plugin = plugin_of("module", "p2_importable_gate")
    assert plugin is not None and plugin.name == "p2_importable" and lines == []


def test_a_plugin_backbone_and_dataset_are_recorded_with_their_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "p2_kinds", TWO_STAGE.format(key="p2_kinds_two") + BRIGHTNESS.format(key="p2_kinds_data"))
    load_plugins([str(path)])
    candidate = Candidate(
        BackboneSpec("p2_kinds_two", 0.25), (PlacementSpec("s1", "se"),), data=DataSpec("p2_kinds_data", image_size=20)
    )
    sha = _sha(path)
    assert used_plugins(candidate) == (
        PluginRecord("attnsearch_plugin_p2_kinds", str(path), sha, "backbone", ("p2_kinds_two",)),
        PluginRecord("attnsearch_plugin_p2_kinds", str(path), sha, "dataset", ("p2_kinds_data",)),
    )
