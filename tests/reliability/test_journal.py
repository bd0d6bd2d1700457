"""The study's journal under the faults a real machine leaves behind: a lock whose owner was killed, a record cut
short by a crash mid-write, and other damage. A run that may wait on a lock is a subprocess with a timeout: a hang
fails the test, never CI."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock

import attnsearch
from attnsearch.cli import main
from attnsearch.search.journal import GRACE_SECONDS, JournalLock, check_journal

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
    left = time.time() - 3 * GRACE_SECONDS  # left there a while ago (a fresh one waits the grace: the next tests)
    os.utime(lock, (left, left), follow_symlinks=False)
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


# ------------------------------------------------------------------------------------------------ fault 2: damage


def _cut_last_record(journal: Path) -> bytes:
    """Append the first half of the journal's last record, unterminated: what a crash mid-append leaves."""
    last = journal.read_bytes().splitlines(keepends=True)[-1]
    partial = last[: len(last) // 2]
    with open(journal, "ab") as f:
        f.write(partial)
    return partial


@pytest.mark.slow
def test_a_record_cut_short_is_set_aside_and_the_run_goes_on(finished_relative: Path) -> None:
    """The issue's input: a finished 2-trial study, half a record appended, then a run of one more trial."""
    journal = finished_relative / "journal.log"
    before = journal.read_bytes()
    partial = _cut_last_record(journal)
    cwd = finished_relative.parent.parent
    done = attnsearch_cli("run", "tiny.yaml", "--results", "r", "--trials", "3", "--no-dashboard", cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "last record was cut short" in done.stdout, done.stdout
    sides = list(finished_relative.glob("journal.log.partial-*"))
    assert len(sides) == 1 and sides[0].read_bytes() == partial and sides[0].name in done.stdout
    after = journal.read_bytes()
    assert after.startswith(before) and len(after) > len(before) and after.endswith(b"\n")
    check_journal(journal)  # every line a record
    assert (finished_relative / "trials" / "2" / "trial.json").is_file()  # the run went on to its 3rd trial
    for command in (["watch", "r/tiny", "--once"], ["report", "r/tiny", "--out", "report"]):
        shown = attnsearch_cli(*command, cwd=cwd)
        assert shown.returncode == 0, (command, shown.stdout + shown.stderr)


def test_nul_bytes_left_at_the_end_are_set_aside(study_copy: Path, tmp_path: Path) -> None:
    """Variant: a file system that extended the journal but lost the data in a crash leaves NUL bytes."""
    journal = study_copy / "journal.log"
    before = journal.read_bytes()
    journal.write_bytes(before + b"\0" * 300)
    result = CliRunner().invoke(
        main, ["run", str(study_copy / "space.yaml"), "--results", str(tmp_path), "--no-dashboard"]
    )
    assert result.exit_code == 0, result.output
    assert "last record was cut short" in result.stdout, result.stdout
    (side,) = study_copy.glob("journal.log.partial-*")
    assert side.read_bytes() == b"\0" * 300
    after = journal.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    check_journal(journal)


def test_watch_and_report_read_a_study_whose_last_record_is_cut_short(study_copy: Path) -> None:
    """They never write: the cut record stays (Optuna's reader skips an unterminated last line) and they work."""
    _cut_last_record(study_copy / "journal.log")
    before = (study_copy / "journal.log").read_bytes()
    for command in (["watch", str(study_copy), "--once"], ["report", str(study_copy), "--out", str(study_copy / "r")]):
        shown = CliRunner().invoke(main, command)
        assert shown.exit_code == 0, (command, shown.output)
    assert (study_copy / "journal.log").read_bytes() == before


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], int]]] = {
    # name: (the damaged journal from the original, the line the error names)
    "a bad line in the middle": (
        lambda b: b"".join([*b.splitlines(keepends=True)[:2], b"this is not json\n", *b.splitlines(keepends=True)[2:]]),
        lambda b: 3,
    ),
    "binary garbage": (lambda b: b + b"\xff\xfe\x00\x80garbage\xc3\x28\n", lambda b: b.count(b"\n") + 1),
    "binary garbage without a newline": (lambda b: b + b"\xff\xfe\x00\x80garbage", lambda b: b.count(b"\n") + 1),
    "a record of the wrong shape": (lambda b: b + b'{"op_code": 4, "worker_id": "w"}\n', lambda b: b.count(b"\n") + 1),
    "an unknown op_code": (lambda b: b + b'{"op_code": 42, "worker_id": "w"}\n', lambda b: b.count(b"\n") + 1),
    "JSON that is not an object": (lambda b: b + b"[1, 2, 3]\n", lambda b: b.count(b"\n") + 1),
}
COMMANDS = {
    "run": ["run", "{folder}/space.yaml", "--results", "{results}", "--no-dashboard"],
    "watch": ["watch", "{folder}", "--once"],
    "report": ["report", "{folder}", "--out", "{results}/report"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_journal_is_one_line_naming_the_line_and_left_as_it_is(
    study_copy: Path, tmp_path: Path, damage: str, command: str
) -> None:
    journal = study_copy / "journal.log"
    original = journal.read_bytes()
    damaged, line = DAMAGE[damage][0](original), DAMAGE[damage][1](original)
    journal.write_bytes(damaged)
    digest = hashlib.sha256(damaged).hexdigest()
    files = sorted(p.name for p in study_copy.iterdir())
    args = [a.format(folder=study_copy, results=tmp_path) for a in COMMANDS[command]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (damage, command, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), result.stderr
    assert f"{journal}: line {line} is not a record of an Optuna journal" in lines[0], lines[0]
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == digest  # byte for byte
    assert sorted(p.name for p in study_copy.iterdir()) == files  # no side file, no lock left
