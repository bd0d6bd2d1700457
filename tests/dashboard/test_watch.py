"""watch's reader: a record is read again exactly when its file changed; a running trial whose process is gone
is stale (not counted as running, no clock kept going)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from attnsearch.dashboard.state import DashboardState
from attnsearch.dashboard.views import render
from attnsearch.dashboard.watch import StudyReader, process_gone
from attnsearch.record import WorkerInfo, timestamp
from attnsearch.search.store import ResultsStore
from processes import wait_for_line

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


# ------------------------------------------------------------------------------------ stale: the process is gone


def running_as(folder: Path, worker: WorkerInfo, started: str | None = None) -> None:
    """Trial 3 of the study in ``folder`` recorded as running by ``worker``, as the runner writes it."""
    store = ResultsStore(folder)
    store.write_record(
        replace(store.read_record(3), state="running", reason=None, worker=worker, started=started or timestamp())
    )


def screen(state: DashboardState) -> str:
    console = Console(width=120, height=40, record=True, file=io.StringIO())
    console.print(render(state, 120, 40))
    return console.export_text()


def gone_process() -> WorkerInfo:
    child = subprocess.Popen(["true"])
    child.wait()
    return WorkerInfo(host=socket.gethostname(), pid=child.pid, device="cpu")


def test_a_running_trial_whose_process_is_gone_is_stale_and_stops_the_clock(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    running_as(folder, gone_process())
    state = StudyReader(folder).read()
    assert list(state.stale) == [3] and not state.running
    assert state.counts()["running"] == 0 and state.counts()["stale"] == 1
    now = time.time()
    assert state.elapsed(now) == state.elapsed(now + 3600)  # no clock kept going by a dead trial
    text = screen(state)
    assert "1 stale" in text and "0 running" in text and "Running (0) · 1 stale" in text
    assert any(line.kind == "stale" and line.trial == 3 for line in state.events)


def test_a_stopped_study_short_of_its_target_shows_no_eta(tmp_path: Path) -> None:
    # a run stopped (a signal, a kill) after 3 of its 6 trials: nothing in flight, so no pace to promise an end by
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    for number in (3, 4, 5):
        (folder / "trials" / str(number) / "trial.json").unlink()
    stopped = StudyReader(folder).read()
    assert stopped.counts()["done"] == 3 and stopped.target == 6
    assert "ETA stopped" in screen(stopped)
    running_as(Path(shutil.copytree(GOLDEN, tmp_path / "live")), WorkerInfo(host=socket.gethostname(), pid=os.getpid()))
    assert "ETA stopped" not in screen(StudyReader(tmp_path / "live").read())  # a live trial: still going
    assert "ETA done" in screen(StudyReader(GOLDEN).read())


@pytest.mark.parametrize(
    ("worker", "started", "stale"),
    [
        (WorkerInfo(host=socket.gethostname(), pid=os.getpid()), None, False),  # alive: this process
        (WorkerInfo(host=socket.gethostname(), pid=os.getpid()), "2001-01-01T00:00:00+0000", True),  # pid used again
        (WorkerInfo(host="another-node", pid=1), None, False),  # another host: not judged from here
        (WorkerInfo(), None, False),  # no worker named (a Ray trial before it reports)
    ],
    ids=["alive", "pid-reused", "other-host", "unknown"],
)
def test_which_running_trials_are_stale(worker: WorkerInfo, started: str | None, stale: bool, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    running_as(folder, worker, started)
    state = StudyReader(folder).read()
    assert (list(state.stale), list(state.running)) == (([3], []) if stale else ([], [3]))
    assert process_gone(worker, state.results.records[3].started_at) is stale


def long_run(tiny_space_file: Callable[..., Path], results: Path) -> subprocess.Popen:
    """A run of one 10,000-epoch trial (pruner none: only the last epoch would be validated), still training
    whenever the test looks, however fast the machine."""
    path = tiny_space_file(train={"epochs": 10_000}, search={"n_trials": 1, "pruner": "none"})
    return subprocess.Popen(
        [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def watch_once(folder: Path) -> subprocess.CompletedProcess:
    """``attnsearch watch FOLDER --once`` in a process of its own, on a 120 x 40 screen."""
    shown = subprocess.run(
        [sys.executable, "-m", "attnsearch", "watch", str(folder), "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", "LINES": "40"},
    )
    assert shown.returncode == 0, shown.stderr
    return shown


@pytest.mark.slow
def test_watch_shows_the_trial_of_a_killed_run_as_stale(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    results = tmp_path / "r"
    run = long_run(tiny_space_file, results)
    try:
        wait_for_line(run, "trial 0 epoch: epoch 1/")
    finally:
        run.kill()  # as kill -9, an out-of-memory kill or a lost node would
        run.wait(timeout=60)
    assert json.loads((results / "tiny" / "trials" / "0" / "trial.json").read_text())["state"] == "running"
    shown = watch_once(results / "tiny")
    assert "0 running" in shown.stdout and "1 stale" in shown.stdout


@pytest.mark.slow
def test_watch_shows_the_progress_of_epochs_that_are_not_validated(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # pruner none: no epoch but the last is validated, so none is an intermediate value; watch still sees the epochs
    results = tmp_path / "r"
    run = long_run(tiny_space_file, results)
    try:
        wait_for_line(run, "trial 0 epoch: epoch 3/")
        shown = watch_once(results / "tiny")
    finally:
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=120)
    epochs = [int(found) for found in re.findall(r"\b(\d+)/10000\b", shown.stdout)]
    assert epochs and max(epochs) >= 3, shown.stdout  # before: 0/10000 until the trial's end
