"""Two `attnsearch run` on one results folder: the second is refused while the first lives, and runs once it died.

Before, the second run took the first one's live trial for a dead one (failed it as `killed`), and the first run
then crashed on a trial it could no longer update.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from processes import wait_for_line

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

LONG = {"train": {"epochs": 10000}, "search": {"n_trials": 2}}  # a trial that lasts until the test ends it


def start(command: list[str]) -> subprocess.Popen:
    """The run, once its first trial has started training (its 'started' line)."""
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_line(run, " started: ")
    return run


def records(folder: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in folder.glob("trials/*/trial.json")}


def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_goes_on(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    path = tiny_space_file(**LONG)
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path / "r"), "--no-dashboard"]
    folder = tmp_path / "r" / "tiny"
    first = start(command)
    try:
        for extra in ([], ["--fresh"], ["--trials", "5"]):
            second = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, (extra, second.stdout + second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "another attnsearch run is writing this folder" in lines[0], lines
            assert str(folder) in lines[0] and second.stdout == ""
        assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["tiny"]  # --fresh moved nothing aside
        assert [r["state"] for r in records(folder).values()] == ["running"]  # its trial untouched
        assert first.poll() is None  # and the first run alive
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=300)[0]
        assert first.returncode == 143, output
        assert "internal error" not in output and "Traceback" not in output
        (record,) = records(folder).values()
        assert (record["state"], record["reason"]) == ("failed", "interrupted")  # its own stop, not "killed"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_run_killed_outright_leaves_no_claim_behind(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    # kill -9 ends the claim with the process: the next run goes on at once and fails the dead trial as killed
    path = tiny_space_file(**LONG)
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path / "r"), "--no-dashboard"]
    first = start(command)
    first.kill()
    first.wait(timeout=60)
    second = start(command)
    second.send_signal(signal.SIGTERM)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 143, output
    states = {n: (r["state"], r["reason"]) for n, r in records(tmp_path / "r" / "tiny").items()}
    assert states == {0: ("failed", "killed"), 1: ("failed", "interrupted")}, states
