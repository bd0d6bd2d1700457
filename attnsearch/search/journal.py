"""The study's journal (``journal.log``): Optuna's file backend, with a lock no dead process can hold for ever and
a check that a record cut short by a crash cannot spoil the file.

Optuna's :class:`~optuna.storages.journal.JournalFileBackend` appends one JSON record per line, each append under
a lock file (``journal.log.lock``). Two faults of real machines are handled here, both said on screen through a
``note`` callback (the runner's :class:`~attnsearch.search.events.Note`):

- **A lock left by a process killed while it held it.** Optuna's own locks are broken only after their grace period
  (30 s without change), and never when the lock is a symlink to a relative path: the link dangles, ``stat`` fails
  and the waiter spins at full CPU for ever. :class:`JournalLock` is taken on the absolute path and writes its owner
  (host and pid) into the lock file: a lock whose owner on this host is gone is removed at once; any other lock
  (Optuna's symlink or open-file lock, a live pid, another host) once it has not changed (``lstat``, which a
  dangling link does not defeat) for :data:`GRACE_SECONDS`, Optuna's grace period, while we wait, or at once when
  its time stamp is older than twice that (a lock left long ago; the margin allows for another host's clock).
- **A record cut short.** A crash mid-append leaves the last line without its newline; Optuna would write the next
  record straight after it, and the joined line spoils the journal for good. :meth:`StudyJournal.append_logs`,
  under the lock and before each write, moves such a tail to ``journal.log.partial-<time>`` and truncates the
  journal to its last complete line. Any other damage is refused by :func:`check_journal`, naming the file and the
  line, with the file left as it is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock

from .store import StoreError, atomic_write

__all__ = ["GRACE_SECONDS", "JournalLock", "StudyJournal", "check_journal"]

GRACE_SECONDS = 30.0  # Optuna's default grace_period of JournalFileSymlinkLock and JournalFileOpenLock
NOTE_AFTER_SECONDS = 2.0  # an append holds the lock for milliseconds: a longer wait is worth a line on screen
RECORD_START = b'{"op_code":'  # how Optuna's file backend begins every record it writes
_OWNER = "attnsearch-lock"  # first word of a lock file this module writes: "attnsearch-lock <host> <pid>"

Note = Callable[[str], None]


def _quiet(text: str) -> None:
    return None


class _BadLine(Exception):
    """A journal line that is not a record, in words."""


class JournalLock(BaseJournalFileLock):
    """The lock of one journal file, ``<journal>.lock``, taken by hard-linking a file that names its owner.

    The lock excludes Optuna's own ``JournalFileSymlinkLock`` and ``JournalFileOpenLock`` on the same journal (they
    use the same name), and it works on NFS like them (``link`` is atomic there). A waiter removes a lock it finds
    stale (see the module's docstring: at once when its owner on this host is gone, else after ``grace`` seconds
    unchanged) and says so through ``note``; it also says so when it has waited :data:`NOTE_AFTER_SECONDS`.
    Processes of one host are told apart by pid: containers that share a host name and a folder but not a pid
    namespace fall back on the grace period only if their pids happen to be alive here.

    Example:
        >>> import tempfile
        >>> lock = JournalLock(Path(tempfile.mkdtemp()) / "journal.log")
        >>> lock.acquire(), lock.path.read_text().split()[0], lock.release(), lock.path.exists()
        (True, 'attnsearch-lock', None, False)
    """

    def __init__(self, journal: Path | str, *, note: Note | None = None, grace: float = GRACE_SECONDS) -> None:
        self.path = Path(os.path.abspath(journal)).with_name(Path(journal).name + ".lock")
        self.note = note or _quiet
        self.grace = grace
        self._mine: tuple[int, int] | None = None  # (device, inode) of the lock file this object holds

    def acquire(self) -> bool:
        """Take the lock, waiting while another live process holds it; True (Optuna's contract)."""
        began = time.monotonic()
        seen: tuple[int, int, int] | None = None  # the lock file waited on: device, inode, mtime
        seen_since = began
        noted = False
        delay = 0.001
        while True:
            if self._create():
                return True
            try:
                found = os.lstat(self.path)
            except FileNotFoundError:  # released between the two calls: try again at once
                continue
            now = time.monotonic()
            key = (found.st_dev, found.st_ino, found.st_mtime_ns)
            if key != seen:
                seen, seen_since = key, now
            owner = self._owner(found)
            whose = _describe(owner, found)
            if owner is not None and owner[0] == socket.gethostname() and not _alive(owner[1]):
                if self._remove(found):
                    self.note(f"removed a stale lock {self.path}: {whose}, which is gone")
                continue
            left = time.time() - found.st_mtime  # by the file system's clock: a lock left long before we came
            if now - seen_since >= self.grace or left >= 2 * self.grace:
                if self._remove(found):
                    unchanged = max(now - seen_since, left)
                    self.note(f"removed a stale lock {self.path}: {whose}, unchanged for {unchanged:.0f} s")
                continue
            if not noted and now - began >= NOTE_AFTER_SECONDS:
                self.note(
                    f"waiting for the lock {self.path} ({whose}); it is removed once unchanged for {self.grace:g} s"
                )
                noted = True
            time.sleep(delay)
            delay = min(2 * delay, 0.25)

    def release(self) -> None:
        """Give the lock up: its file is removed, unless it is no longer the one this object made (a waiter took
        it for stale and another process holds it now)."""
        mine, self._mine = self._mine, None
        try:
            found = os.lstat(self.path)
        except FileNotFoundError:
            return
        if mine == (found.st_dev, found.st_ino):
            self._remove(found)

    def _create(self) -> bool:
        """Make the lock file, complete with its owner, in one atomic step (``link`` of a finished file)."""
        draft = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, f"{_OWNER} {socket.gethostname()} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        try:
            os.link(draft, self.path)
        except FileExistsError:
            return False
        except OSError as err:  # a file system without hard links: an exclusive rename is not there either
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return self._create_without_link()
        finally:
            os.unlink(draft)
        found = os.lstat(self.path)
        self._mine = (found.st_dev, found.st_ino)
        return True

    def _create_without_link(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{_OWNER} {socket.gethostname()} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        found = os.lstat(self.path)
        self._mine = (found.st_dev, found.st_ino)
        return True

    def _owner(self, found: os.stat_result) -> tuple[str, int] | None:
        """(host, pid) of a lock this module wrote; None for Optuna's locks, or one being written."""
        if not stat.S_ISREG(found.st_mode) or found.st_size > 512:
            return None
        try:
            words = self.path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return None
        if len(words) != 3 or words[0] != _OWNER or not words[2].isdigit():
            return None
        return words[1], int(words[2])

    def _remove(self, found: os.stat_result) -> bool:
        """Remove the lock file ``found`` (moved aside first, so that a lock made since is never the one removed);
        False when it was gone or replaced."""
        aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = os.lstat(aside)
        if (moved.st_dev, moved.st_ino) != (found.st_dev, found.st_ino):  # a new lock since: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path, follow_symlinks=False)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _describe(owner: tuple[str, int] | None, found: os.stat_result) -> str:
    if owner is not None:
        return f"held by process {owner[1]} on {owner[0]}"
    if stat.S_ISLNK(found.st_mode):
        return "an Optuna symlink lock, owner unknown"
    return "a lock file of unknown owner"


class StudyJournal(JournalFileBackend):
    """Optuna's journal file backend on the absolute path of ``path``, locked by :class:`JournalLock`, setting
    aside a record cut short before it appends (see the module's docstring). ``note`` hears what was done."""

    def __init__(self, path: Path | str, *, note: Note | None = None) -> None:
        self.path = Path(os.path.abspath(path))
        self.note = note or _quiet
        super().__init__(str(self.path), lock_obj=JournalLock(self.path, note=self.note))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Optuna's ``append_logs`` (one compact JSON record per line, flushed and fsynced), after setting aside an
        unterminated last line, under the lock."""
        self._lock.acquire()
        try:
            self._set_aside_cut_record()
            text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
            data = memoryview(text.encode("utf-8"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                start = os.lseek(fd, 0, os.SEEK_END)
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError as err:  # a full disk or a quota: no part of the records stays behind
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise StoreError(f"{self.path}: cannot write ({err.strerror or err})") from None
            finally:
                os.close(fd)
        finally:
            self._lock.release()

    def _set_aside_cut_record(self) -> None:
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            end = _after_last_newline(f, size)
            f.seek(end)
            tail = f.read()
            side = self.path.with_name(f"{self.path.name}.partial-{time.strftime('%Y%m%d-%H%M%S')}")
            n = 1
            while side.exists():
                n += 1
                side = side.with_name(f"{self.path.name}.partial-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            atomic_write(side, tail)
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        self.note(
            f"{self.path}: its last record was cut short (a process stopped while writing it); "
            f"its {len(tail)} bytes were moved to {side.name} and the journal goes on from its last complete line"
        )


def _after_last_newline(f: Any, size: int) -> int:
    """The offset just after the last newline of an open binary file of ``size`` bytes (0 when it has none)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def check_journal(path: Path | str) -> None:
    """Check that every line of a journal is a record Optuna can replay; a StoreError naming the file and the first
    line that is not (the file is not changed).

    Each complete line must be a JSON object with an integer ``op_code`` that Optuna's own replay
    (``JournalStorageReplayResult``, as any reader of the journal applies it) accepts. An unterminated last line
    passes when it is what a cut append leaves (the start of a record as Optuna writes one, or NUL bytes, which a
    crash may leave on some file systems): the next append sets it aside.

    Example:
        >>> import tempfile
        >>> journal = Path(tempfile.mkdtemp()) / "journal.log"
        >>> _ = journal.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\\nhello\\n')
        >>> check_journal(journal)
        Traceback (most recent call last):
        ...
        attnsearch.search.store.StoreError: .../journal.log: line 2 is not a record of an Optuna journal (...)
    """
    from optuna.storages.journal._storage import JournalStorageReplayResult

    path = Path(path)
    if not path.exists():  # a new study: nothing to check
        return
    replay = JournalStorageReplayResult(f"attnsearch-check-{uuid.uuid4()}-")  # no record is this reader's own
    number = 0
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):  # noqa: B007 (the number is the error's)
                if not line.endswith(b"\n"):
                    if _cut_record(line):
                        return
                    raise _BadLine("no newline at its end, and not the start of a record")
                try:
                    log = json.loads(line)
                except UnicodeDecodeError:
                    raise _BadLine("not UTF-8 text") from None
                if not isinstance(log, dict) or type(log.get("op_code")) is not int:
                    raise _BadLine("not a JSON object with an integer op_code")
                replay.apply_logs([log])
    except OSError as err:
        raise StoreError(f"{path}: cannot read the journal ({err.strerror or err})") from None
    except Exception as err:  # json's, Optuna's replay (KeyError, TypeError, AssertionError ...): the line is bad
        reason = " ".join(str(err).split())[:160]
        if not isinstance(err, _BadLine):
            reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        raise StoreError(f"{path}: line {number} is not a record of an Optuna journal ({reason})") from None


def _cut_record(tail: bytes) -> bool:
    """Whether an unterminated last line is what an append stopped midway leaves."""
    return tail.startswith(RECORD_START) or RECORD_START.startswith(tail) or not tail.strip(b"\0")
