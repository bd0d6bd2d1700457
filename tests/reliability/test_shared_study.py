"""Several drivers on one study (``--storage``), the other driver played by the test on an SQLite study: each case
happens exactly, in one process. The real thing, two ``attnsearch run`` processes on PostgreSQL, is in
test_postgres.py.

Faults covered: a driver starting failed the trials another driver was training (its start-up recovery took every
running trial for a dead one), trained a candidate another driver was training, retrained one another driver had
finished, and a grid whose points two drivers enqueued at once skipped points; ``watch`` and ``report`` showed one
driver's trials only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from attnsearch.candidate import Candidate
from attnsearch.cli import main
from attnsearch.record import Metrics, TrialRecord, timestamp
from attnsearch.search.events import Event, Note, TrialStarted
from attnsearch.search.runner import run_search
from attnsearch.search.shared import ATTR, Driver, asked, attrs, store_outcome
from attnsearch.search.store import ResultsStore
from attnsearch.search.study import open_study
from attnsearch.space import SearchSpace, parse_space

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

ONE_CANDIDATE = {"slots": {"block3": ["se"], "block5": ["none"]}, "train": {"epochs": 1}, "search": {"n_trials": 2}}


class OtherDriver:
    """Another ``attnsearch run`` on the study, played by the test: it asks trials, says what they train, ends them."""

    def __init__(self, space: SearchSpace, url: str, folder: Path, *, pid: int | None = None) -> None:
        self.space = space
        self.study = open_study(space, ResultsStore(folder), url)
        here = Driver.here(folder)
        self.driver = here if pid is None else replace(here, pid=pid)

    def start(self, params: dict[str, Any] | None = None) -> tuple[optuna.Trial, Candidate]:
        if params is not None:
            self.study.enqueue_trial(params)
        trial = self.study.ask()
        candidate = self.space.suggest(trial)
        trial.set_user_attr(ATTR, asked(candidate, retry_of=None, started=timestamp(), driver=self.driver))
        return trial, candidate

    def finish(self, trial: optuna.Trial, candidate: Candidate, val_acc: float) -> None:
        known = attrs(self.study.get_trials(deepcopy=False)[trial.number])
        record = TrialRecord(
            trial.number,
            "complete",
            candidate=candidate,
            params=trial.params,
            metrics=Metrics(val_acc=val_acc, params=123),
            started=known["stamp"],
            finished=timestamp(),
        )
        store_outcome(self.study._storage, trial._trial_id, known, record)
        self.study.tell(trial, [val_acc])


def _trials(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _records(folder: Path) -> dict[int, TrialRecord]:
    return {r.number: r for r in ResultsStore(folder).read_records()}


def test_a_candidate_another_driver_trains_is_skipped_then_its_outcome_reused(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]]
) -> None:
    space = parse_space(tiny_space(**ONE_CANDIDATE))  # one candidate: every trial asks for it
    url = f"sqlite:///{tmp_path}/study.db"
    other = OtherDriver(space, url, tmp_path / "b" / "tiny")
    theirs, candidate = other.start()  # trial 0: training in the other driver

    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, Note) and event.text.startswith("trial 1 not trained"):
            other.finish(theirs, candidate, 0.625)  # the other driver ends its trial while this one waits

    outcome = run_search(space, results=tmp_path / "a", storage=url, on_event=on_event)

    assert not [e for e in events if isinstance(e, TrialStarted)]  # nothing was trained here
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert attrs(trials[1])["skipped_for"] == 0
    [mine] = _records(tmp_path / "a" / "tiny").values()  # the skipped trial 1 is recorded nowhere
    assert (mine.number, mine.state, mine.reused_from, mine.score("val_acc")) == (2, "complete", 0, 0.625)
    assert trials[2].values == [0.625]
    assert outcome.ran == 1


def test_the_last_trial_asked_by_two_drivers_at_once_runs_once(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # one trial left to run; the other driver asks for it just before this one does, and has not yet said what it
    # trains when this one looks: this one must leave it the last trial (once, the two ran 2 trials of 1)
    space = parse_space(tiny_space(train={"epochs": 1}, search={"n_trials": 1}))
    url = f"sqlite:///{tmp_path}/study.db"
    other = OtherDriver(space, url, tmp_path / "b" / "tiny")
    ask = optuna.Study.ask
    raced: list[optuna.Trial] = []

    def racing_ask(study: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        if study is not other.study and not raced:
            raced.append(other.study.ask())  # trial 0, the other driver's, a moment before this one's
        return ask(study, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", racing_ask)
    events: list[Event] = []
    run_search(space, results=tmp_path / "a", storage=url, on_event=events.append)

    assert not [e for e in events if isinstance(e, TrialStarted)]
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert attrs(trials[1])["skipped_for"] == 0
    assert _records(tmp_path / "a" / "tiny") == {}


def test_a_live_driver_s_trial_is_left_running_and_a_dead_one_s_is_retried(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]]
) -> None:
    space = parse_space(tiny_space(train={"epochs": 1}, search={"n_trials": 2}))
    url = f"sqlite:///{tmp_path}/study.db"
    grid = space.grid()
    live = OtherDriver(space, url, tmp_path / "b" / "tiny")  # alive: this process
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = OtherDriver(space, url, tmp_path / "c" / "tiny", pid=gone.pid)  # a driver on this host that has ended
    live.start(grid[0])  # trial 0
    _, lost = dead.start(grid[1])  # trial 1

    events: list[Event] = []
    run_search(space, results=tmp_path / "a", storage=url, on_event=events.append)

    trials = _trials(url)
    assert trials[0].state == TrialState.RUNNING and "state" not in attrs(trials[0])  # left to its driver
    assert trials[1].state == TrialState.FAIL and attrs(trials[1])["reason"] == "killed"
    mine = _records(tmp_path / "a" / "tiny")
    assert list(mine) == [2]  # only what this driver ran: the other folders' trials are theirs
    assert (mine[2].retry_of, mine[2].state, mine[2].candidate) == (1, "complete", lost)
    assert any(isinstance(e, Note) and "trials 0 run in other drivers" in e.text for e in events)
    assert os.getpid() == live.driver.pid


def test_a_grid_enqueued_twice_still_trains_every_point_once(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]]
) -> None:
    # what two drivers starting at the same moment can leave: each design point enqueued twice, interleaved
    slots = {"block3": ["none", "se", "cbam"], "block5": ["none"]}
    space = parse_space(tiny_space(slots=slots, train={"epochs": 1}, search={"sampler": "grid"}))
    url = f"sqlite:///{tmp_path}/study.db"
    study = open_study(space, ResultsStore(tmp_path / "b" / "tiny"), url)
    for params in space.grid():
        study.enqueue_trial(params)
        study.enqueue_trial(params)
    study.set_user_attr("enqueued", True)

    outcome = run_search(space, results=tmp_path / "a", storage=url)

    records = _records(tmp_path / "a" / "tiny")
    trained = [r for r in records.values() if r.reused_from is None]
    assert sorted(r.label for r in trained) == sorted({r.label for r in trained})  # each point once
    assert len(trained) == len(space.grid()) == outcome.results.done == 3
    # the copies asked are skipped; the last one is left waiting, the grid being done
    assert [n for n, t in enumerate(_trials(url)) if "skipped_for" in attrs(t)] == [1, 3]
    assert [t.state for t in _trials(url)][-1] == TrialState.WAITING


def _watch_and_report(folder: Path, tmp_path: Path, *storage: str) -> tuple[str, str]:
    watched = CliRunner().invoke(main, ["watch", str(folder), "--once", *storage])
    assert watched.exit_code == 0, watched.output
    reported = CliRunner().invoke(main, ["report", str(folder), "--out", str(tmp_path / "report"), *storage])
    assert reported.exit_code == 0, reported.output
    return watched.stdout, reported.stdout


def test_watch_and_report_with_storage_show_every_driver_s_trials(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]]
) -> None:
    space = parse_space(tiny_space(train={"epochs": 1}, search={"n_trials": 3}))
    url = f"sqlite:///{tmp_path}/study.db"
    run_search(space, results=tmp_path / "a", storage=url, n_trials=1)  # this driver: trial 0
    folder = tmp_path / "a" / "tiny"
    mine = _records(folder)[0]
    other = OtherDriver(space, url, tmp_path / "b" / "tiny")
    grid = [p for p in space.grid() if space.suggest(optuna.trial.FixedTrial(p)).key() != mine.candidate.key()]
    finished, candidate = other.start(grid[0])  # trial 1: finished by the other driver
    other.finish(finished, candidate, 0.9921875)  # a score no trial of 64 validation images can have
    _, running = other.start(grid[1])  # trial 2: the other driver trains it now

    alone, _ = _watch_and_report(folder, tmp_path)
    assert "1/3 done" in alone and "99.2%" not in alone  # the folder alone: its own trial
    watched, reported = _watch_and_report(folder, tmp_path, "--storage", url)
    assert "2/3 done" in watched  # the other driver's trial 1 too
    assert "99.2%" in watched and "99.2%" in reported  # trial 1's score, the best of the study
    assert "tiny: 2 complete, 1 running" in reported
    assert running.describe() in watched  # trial 2, running in the other driver


def test_watch_and_report_refuse_a_storage_the_folder_was_not_run_with(
    tmp_path: Path, tiny_space: Callable[..., dict[str, Any]], snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    space = parse_space(tiny_space(train={"epochs": 1}, search={"n_trials": 1}))
    run_search(space, results=tmp_path / "a")  # the journal in the folder
    run_search(space, results=tmp_path / "b", storage=f"sqlite:///{tmp_path}/other.db")
    folder = tmp_path / "a" / "tiny"
    before = snapshot(tmp_path)
    for url in (f"sqlite:///{tmp_path}/other.db", f"sqlite:///{tmp_path}/none.db", "nosuchdb://x"):
        for command in (["watch", str(folder), "--once"], ["report", str(folder), "--out", str(tmp_path / "r")]):
            result = CliRunner().invoke(main, [*command, "--storage", url])
            assert result.exit_code == 2, (command, url, result.output)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), lines
    assert snapshot(tmp_path) == before  # nothing written, no database file made
