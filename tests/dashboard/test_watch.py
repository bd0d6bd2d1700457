"""watch's reader: a record is read again exactly when its file changed."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from attnsearch.dashboard.watch import StudyReader
from attnsearch.search.store import ResultsStore

GOLDEN = Path(__file__).parents[1] / "golden" / "golden"  # a finished 6-trial study


def test_a_changed_record_is_read_again_and_an_unchanged_one_is_kept(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    reader = StudyReader(folder)
    first = reader.results()
    assert first.counts()["complete"] == 6
    store = ResultsStore(folder)
    store.write_record(replace(store.read_record(3), state="failed", reason="killed"))  # as a resumed run writes
    again = reader.results()
    assert again.counts()["complete"] == 5 and again.records[3].reason == "killed"
    assert again.records[0] is first.records[0]  # unchanged files are not parsed again
    (folder / "trials" / "3" / "trial.json").unlink()  # a record gone between two reads
    assert 3 not in reader.results().records
