"""Corrupt or foreign results folders: watch, report, export and replay answer one clear line, exit 2, run nothing."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attnsearch.cli import main

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

COMMANDS = {
    "watch": ["watch", "{folder}", "--once"],
    "report": ["report", "{folder}", "--out", "{out}"],
    "export": ["export", "{folder}", "--trial", "0", "--weights", "-o", "{out}/model.py"],
    "replay": ["replay", "{folder}", "--trial", "0"],
}


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _missing_record(folder: Path, marker: Path) -> None:
    (folder / "trials" / "0" / "trial.json").unlink()


def _truncated_record(folder: Path, marker: Path) -> None:
    path = folder / "trials" / "0" / "trial.json"
    path.write_text(path.read_text()[:200])


def _weights_not_a_state_dict(folder: Path, marker: Path) -> None:
    torch.save([1, 2, 3], folder / "trials" / "0" / "model.pt")


def _weights_that_run_code(folder: Path, marker: Path) -> None:
    torch.save({"features.0.weight": Evil(marker)}, folder / "trials" / "0" / "model.pt")


def _foreign_folder(folder: Path, marker: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "notes.txt").write_text("holiday photos")


def _record_of_something_else(folder: Path, marker: Path) -> None:
    (folder / "trials" / "0" / "trial.json").write_text(json.dumps({"hello": "world"}))


def _hand_edited_record(folder: Path, marker: Path) -> None:
    path = folder / "trials" / "0" / "trial.json"
    record = json.loads(path.read_text())
    record["candidate"]["train"]["epochs"] = "3"  # a string where a number belongs
    path.write_text(json.dumps(record))


DAMAGE: dict[str, Callable[[Path, Path], None]] = {
    "missing trial.json": _missing_record,
    "truncated trial.json": _truncated_record,
    "weights not a state_dict": _weights_not_a_state_dict,
    "weights that run code": _weights_that_run_code,
    "foreign folder": _foreign_folder,
    "record of something else": _record_of_something_else,
    "hand-edited record": _hand_edited_record,
}
# what each command reads: a damage a command never looks at is not its error to report
READS = {
    "watch": {"truncated trial.json", "foreign folder", "record of something else"},
    "report": {"truncated trial.json", "foreign folder", "record of something else"},
    "export": set(DAMAGE),
    "replay": {
        "missing trial.json",
        "truncated trial.json",
        "foreign folder",
        "record of something else",
        "hand-edited record",
    },
}


@pytest.mark.parametrize(("command", "damage"), [(c, d) for c in sorted(COMMANDS) for d in sorted(READS[c])])
def test_damaged_folder(
    study_copy: Path, tmp_path: Path, command: str, damage: str, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    folder = study_copy
    marker = tmp_path / "PWNED"
    DAMAGE[damage](folder, marker)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    args = [a.format(folder=folder, out=out) for a in COMMANDS[command]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (command, damage, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), (command, damage, result.stderr)
    assert "Traceback" not in result.output
    assert not marker.exists()  # nothing from the folder ran
    assert snapshot(tmp_path) == before  # and nothing was written


def test_missing_folder_for_every_command(tmp_path: Path) -> None:
    for command, template in COMMANDS.items():
        args = [a.format(folder=tmp_path / "nowhere", out=tmp_path / "out") for a in template]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (command, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
