"""A results folder run again against another study's storage is refused, one line, exit 2, nothing changed.

The fault: `run` with the default journal, then again with `--storage sqlite:///other.db` on the same `--results`,
ran the other study's trials 0, 1, ... and wrote them over `trials/<n>/trial.json`. The variants: the other way
round (a storage URL first, then the default journal), and another storage whose study has the same trial numbers
with the same candidates (same space, same seed) but is still another study. The PostgreSQL variant is in
test_postgres.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnsearch.cli import main
from attnsearch.record import timestamp
from attnsearch.search.runner import run_search
from attnsearch.space import load_space

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

CHANGES = {"train": {"epochs": 1}, "search": {"n_trials": 2}}


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _run_cli(space: Path, results: Path, *more: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["run", str(space), "--results", str(results), "--no-dashboard", *more])
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr.strip().splitlines()


def _assert_refused(space: Path, results: Path, storage: str | None) -> list[str]:
    folder = results / "tiny"
    before = _tree(folder)
    code, lines = _run_cli(space, results, *(["--storage", storage] if storage else []))
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), lines
    assert _tree(folder) == before  # every trial.json (and everything else) byte-for-byte as it was
    return lines


def test_journal_study_then_another_storage_is_refused(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(**CHANGES)
    results = tmp_path / "results"
    run_search(load_space(path), results=results)
    [line] = _assert_refused(path, results, f"sqlite:///{tmp_path}/other.db")
    assert "another study" in line and "trial 0" in line and "run it without --storage" in line, line
    assert not (tmp_path / "other.db").exists()  # looking at the storage made no database either


def test_storage_study_then_the_default_journal_is_refused(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    path = tiny_space_file(**CHANGES)
    results = tmp_path / "results"
    run_search(load_space(path), results=results, storage=f"sqlite:///{tmp_path}/first.db")
    assert not (results / "tiny" / "journal.log").exists()
    [line] = _assert_refused(path, results, None)
    assert "journal" in line
    assert not (results / "tiny" / "journal.log").exists()


def test_another_storage_with_the_same_trials_is_still_another_study(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # same space and seed: the other study proposes the same candidates at the same trial numbers
    path = tiny_space_file(**CHANGES)
    space = load_space(path)
    results = tmp_path / "results"
    first = run_search(space, results=results)
    last = max(r.started for r in first.results.records.values() if r.started)
    while timestamp() == last:  # the other study's trials start in a later second (records stamp seconds)
        time.sleep(0.05)
    other = f"sqlite:///{tmp_path}/other.db"
    second = run_search(space, results=tmp_path / "elsewhere", storage=other)
    keys = {n: r.candidate.key() for n, r in first.results.records.items()}
    assert {n: r.candidate.key() for n, r in second.results.records.items()} == keys  # same numbers, same candidates
    _assert_refused(path, results, other)


def test_the_storage_the_folder_was_run_with_is_accepted(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    # the check lets a folder continue its own study: n_trials raised from 2 to 3 runs one more trial
    path = tiny_space_file(**CHANGES)
    storage = f"sqlite:///{tmp_path}/study.db"
    results = tmp_path / "results"
    run_search(load_space(path), results=results, storage=storage)
    before = {p: (results / "tiny" / p).read_bytes() for p in ("trials/0/trial.json", "trials/1/trial.json")}
    code, lines = _run_cli(path, results, "--storage", storage, "--trials", "3")
    assert code == 0, lines
    assert sorted(p.parent.name for p in (results / "tiny").glob("trials/*/trial.json")) == ["0", "1", "2"]
    assert {p: (results / "tiny" / p).read_bytes() for p in before} == before
