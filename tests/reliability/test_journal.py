"""The study's journal under the faults a real machine leaves behind: a lock whose owner was killed, and a record cut
short by a crash mid-write. Every CLI run here is a subprocess with a timeout: a hang fails the test, never CI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock

import attnsearch
from attnsearch.search.journal import JournalLock

pytestmark = [pytest.mark.reliability]

REPO = Path(attnsearch.__file__).resolve().parent.parent
TIMEOUT = 600  # seconds: far above a stale lock's grace period (30 s) and a tiny run, on a busy machine


def attnsearch_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m attnsearch ARGS`` in ``cwd``, this checkout first on the path; a hang raises TimeoutExpired."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "attnsearch", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def python(script: str, cwd: Path) -> None:
    """Run ``script`` in a process of its own, which then ends (or is killed) without releasing what it took."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env={**os.environ, "PYTHONPATH": path}, timeout=TIMEOUT
    )
    assert done.returncode in (0, -9), done


@pytest.fixture
def finished_relative(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> Path:
    """A finished 2-trial run with the relative ``--results r``, run from ``tmp_path``; the study folder."""
    space = tiny_space_file(train={"epochs": 1}, search={"n_trials": 2})
    done = attnsearch_cli("run", space.name, "--results", "r", "--no-dashboard", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / "r" / "tiny"


# ------------------------------------------------------------------------------------------------ fault 1: locks


@pytest.mark.slow
def test_an_optuna_lock_left_on_a_relative_path_is_removed_and_said(finished_relative: Path) -> None:
    cwd = finished_relative.parent.parent
    # the input: Optuna's own lock on the relative path, taken by a process that then exits
    python("from optuna.storages.journal import JournalFileSymlinkLock as L; L('r/tiny/journal.log').acquire()", cwd)
    lock = finished_relative / "journal.log.lock"
    assert lock.is_symlink() and not lock.exists()  # the link dangles: what made Optuna spin for ever
    done = attnsearch_cli("run", "tiny.yaml", "--results", "r", "--no-dashboard", cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed a stale lock" in done.stdout and "journal.log.lock" in done.stdout, done.stdout
    assert not lock.is_symlink() and not lock.exists()


@pytest.mark.slow
def test_a_lock_of_a_killed_attnsearch_is_removed_at_once(finished_relative: Path) -> None:
    """Variant: the project's own lock, its holder killed with SIGKILL (its pid is gone, so no grace period)."""
    cwd = finished_relative.parent.parent
    python(
        "import os, signal; from attnsearch.search.journal import JournalLock; "
        "JournalLock('r/tiny/journal.log').acquire(); os.kill(os.getpid(), signal.SIGKILL)",
        cwd,
    )
    lock = finished_relative / "journal.log.lock"
    assert lock.read_text().split()[0] == "attnsearch-lock"
    done = attnsearch_cli("run", "tiny.yaml", "--results", "r", "--no-dashboard", "--trials", "3", cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed a stale lock" in done.stdout and "which is gone" in done.stdout, done.stdout
    assert "unchanged for" not in done.stdout  # not by the grace period: its owner is known to be dead
    assert not lock.exists()
    assert len(list((finished_relative / "trials").iterdir())) == 3  # and the run went on to train its trial


@pytest.mark.parametrize("kind", ["open", "symlink"])
def test_optuna_locks_left_on_an_absolute_path_are_removed_after_the_grace_period(tmp_path: Path, kind: str) -> None:
    """Variant: Optuna's open-file lock and symlink lock, on an absolute path, are broken once unchanged for the
    grace period (1 s here; Optuna's 30 s in a run), with a note."""
    journal = tmp_path / "journal.log"
    journal.touch()
    (JournalFileOpenLock if kind == "open" else JournalFileSymlinkLock)(str(journal)).acquire()
    notes: list[str] = []
    lock = JournalLock(journal, note=notes.append, grace=1.0)
    assert lock.acquire()
    assert any("removed a stale lock" in note and "unchanged for 1 s" in note for note in notes), notes
    assert lock.path.read_text().split() == ["attnsearch-lock", socket.gethostname(), str(os.getpid())]
    lock.release()
    assert not lock.path.exists()


def test_a_live_holder_is_waited_for_not_broken(tmp_path: Path) -> None:
    """A lock whose owner is alive is waited for (with a note once the wait is long) and taken once released."""
    journal = tmp_path / "journal.log"
    holder = JournalLock(journal)
    assert holder.acquire()
    waiting, notes = threading.Event(), []

    def note(text: str) -> None:
        notes.append(text)
        if text.startswith("waiting for the lock"):
            waiting.set()

    waiter = JournalLock(journal, note=note, grace=3600.0)
    got = threading.Event()
    thread = threading.Thread(target=lambda: waiter.acquire() and got.set(), daemon=True)
    thread.start()
    assert waiting.wait(timeout=TIMEOUT), notes
    assert not got.is_set()  # still waiting: the holder (this process) is alive
    holder.release()
    assert got.wait(timeout=TIMEOUT)
    thread.join(timeout=TIMEOUT)
    assert not any(text.startswith("removed") for text in notes), notes
    waiter.release()
    assert not waiter.path.exists()
