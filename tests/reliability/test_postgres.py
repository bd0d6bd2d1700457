"""Several drivers on one study, for real: a PostgreSQL server that the tests start (``_postgres_server.py``; CI
installs PostgreSQL in ``.ci/run``) and two ``attnsearch run`` processes on one study at once, each with its own
results folder as on two machines. Skipped, with the reason, only where the server cannot start.

What they must do together: reach ``n_trials``, no trial number used twice, no candidate trained twice (a duplicate
reuses the outcome of a trial the other driver finished, or is skipped while the other trains it); ``watch`` and
``report`` with ``--storage`` show the trials of both. And a folder run with the journal is refused on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from attnsearch.cli import main
from attnsearch.record import TrialRecord
from attnsearch.search.runner import run_search
from attnsearch.search.shared import attrs
from attnsearch.search.store import ResultsStore
from attnsearch.space import load_space

from _postgres_server import PostgresServer, PostgresUnavailable  # tests/reliability/_postgres_server.py

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# 3 candidates, 6 trials: at least 3 duplicates, and while one driver trains a candidate the other asks for the
# same one a third of the time
CHANGES = {
    "slots": {"block3": ["none", "se", "cbam"], "block5": ["none"]},
    "train": {"epochs": 1},
    "search": {"n_trials": 6},
}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[test]')")
    try:
        server = PostgresServer()
    except PostgresUnavailable as err:
        pytest.skip(f"PostgreSQL cannot start here: {err}")
    try:
        server.start()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as err:
        server.stop()
        pytest.skip(f"PostgreSQL cannot start here: {err}")
    try:
        yield server
    finally:
        server.stop()


def _records(folder: Path) -> dict[int, TrialRecord]:
    return {r.number: r for r in ResultsStore(folder).read_records()}


def _run(space: Path, results: Path, url: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "attnsearch", "run", str(space), "--results", str(results), "--storage", url]
    return subprocess.Popen([*command, "--no-dashboard"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_drivers_share_one_study(
    postgres: PostgresServer, tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    url = postgres.new_database()
    path = tiny_space_file(**CHANGES)
    drivers = {name: _run(path, tmp_path / name, url) for name in ("a", "b")}  # at once, as on two machines
    logs = {name: driver.communicate(timeout=540)[0] for name, driver in drivers.items()}
    for name, driver in drivers.items():
        assert driver.returncode == 0, f"driver {name}:\n{logs[name]}"

    folders = {name: _records(tmp_path / name / "tiny") for name in drivers}
    assert not set(folders["a"]) & set(folders["b"])  # no trial number used twice
    records = {**folders["a"], **folders["b"]}
    assert sum(r.counts_towards_target for r in records.values()) == CHANGES["search"]["n_trials"]  # reached, exactly
    trained = [r.candidate.key() for r in records.values() if r.reused_from is None]
    assert len(trained) == len(set(trained))  # no candidate trained twice, by one driver or by both
    assert len(records) - len(trained) >= 3  # the duplicates reused an outcome instead
    for record in records.values():
        if record.reused_from is not None:  # ... of a trial of either driver, with its score
            source = records[record.reused_from]
            assert (source.candidate, source.metrics) == (record.candidate, record.metrics)

    # the study agrees: every trial is recorded in one of the two folders, except the duplicates skipped while the
    # other driver trained their candidate, which no folder records and no count includes
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
    skipped = {t.number for t in trials if "skipped_for" in attrs(t)}
    assert {t.number for t in trials if t.state != TrialState.WAITING} == set(records) | skipped
    assert all(t.state == TrialState.FAIL for t in trials if t.number in skipped)
    for t in trials:
        if t.number not in skipped:
            continue
        reason, other = attrs(t)["reason"], attrs(t)["skipped_for"]
        if "trains the same candidate" in reason:  # that trial, the other driver's, was training it
            assert records[other].candidate.key() == attrs(t)["key"] and records[other].reused_from is None
        else:  # asked for the last trial while the other driver, which asked just before, ran it
            assert reason == "the other drivers' trials reach n_trials", reason

    # watch and report with --storage show the whole study from either folder; without it, one driver's trials
    done = f"{CHANGES['search']['n_trials']}/{CHANGES['search']['n_trials']} done"
    for name in drivers:
        watched = CliRunner().invoke(main, ["watch", str(tmp_path / name / "tiny"), "--once", "--storage", url])
        assert watched.exit_code == 0 and done in watched.stdout, watched.output
    out = tmp_path / "report"
    reported = CliRunner().invoke(main, ["report", str(tmp_path / "b" / "tiny"), "--out", str(out), "--storage", url])
    assert reported.exit_code == 0, reported.output
    complete = sum(r.state == "complete" for r in records.values())
    assert f"tiny: {complete} complete, 0 running" in reported.stdout
    assert f"Leaderboard ({len(trained)} complete, {len(records) - len(trained)} reused)" in reported.stdout
    if folders["a"] and folders["b"]:  # each ran some (the usual case): one folder alone is not the whole study
        alone = CliRunner().invoke(main, ["watch", str(tmp_path / "a" / "tiny"), "--once"])
        assert alone.exit_code == 0 and done not in alone.stdout, alone.output


def test_a_journal_folder_run_on_postgres_is_refused(
    postgres: PostgresServer, tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    path = tiny_space_file(train={"epochs": 1}, search={"n_trials": 2})
    run_search(load_space(path), results=tmp_path)  # the default journal
    folder = tmp_path / "tiny"
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    url = postgres.new_database()
    result = CliRunner().invoke(main, ["run", str(path), "--results", str(tmp_path), "--storage", url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds trials of another study" in lines[0], lines
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
    assert optuna.get_all_study_names(storage=url) == []  # nor was a study made there
