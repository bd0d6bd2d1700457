"""``attnsearch watch``: the dashboard of a study, read from its folder by another process, never written to.

The trial records (``trials/<n>/trial.json``, written atomically by the runner) give every trial, and those under
``confirm/<n>/`` the confirmation race's; the Optuna journal, when there is one, adds how far each running search
trial has got. The journal is read the way Optuna's own file backend reads it, without its lock, so the runner is
never held up; the backend used here refuses to append, so nothing this module does can add a line to the study.

A trial (of the search or of the race) whose record says ``running`` but whose process is gone (the run was
killed: ``kill -9``, an out-of-memory kill, a node that went down) is shown as stale, neither counted as running
nor keeping the clock going; see :func:`process_gone` for what can be told, and from where.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..record import TrialRecord, WorkerInfo
from ..results import StudyResults
from ..search.store import ResultsStore, StoreError
from ..signals import Stopped
from .state import DashboardState

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

__all__ = ["StudyReader", "process_gone", "watch"]


class StudyReader:
    """Reads a results folder (and its journal) again and again, as fresh :class:`StudyResults` each time.

    Raises ``StoreError`` (one line) for a folder that is not a study: missing, without ``space.yaml``, with an
    unreadable space or trial record, or with a journal that holds no study of that name.

    ``storage``: the URL of the Optuna storage the study was run with (``run --storage``): the results are then every
    trial of the study, those of the other drivers that share it too (:meth:`StudyResults.from_study`), and a folder
    whose records are not trials of that study is refused (one line).

    Example:
        >>> reader = StudyReader("tests/golden/golden")  # a tiny finished study the tests keep
        >>> reader.results().counts()["complete"]
        6
    """

    def __init__(self, folder: Path | str, *, storage: str | None = None) -> None:
        self.store = ResultsStore(folder)
        root = self.store.root
        if not root.is_dir():
            raise StoreError(f"{root}: no such results folder")
        if not self.store.space_path.is_file():
            raise StoreError(f"{root}: not a results folder of attnsearch (no space.yaml)")
        self.space = self.store.read_space()
        assert self.space is not None
        self.storage = storage
        if storage:
            from ..search.shared import check_same_study, open_shared_study, shown_url

            self.study: optuna.Study | None = open_shared_study(storage, self.space.name)
        else:
            self.study = _open_journal(self.store, self.space.name)
        self._records: dict[int, tuple[tuple[int, ...], TrialRecord]] = {}  # number -> (its file's identity, it)
        self._confirmed: dict[int, tuple[tuple[int, ...], TrialRecord]] = {}  # the same for the race's records
        self.read()  # a corrupt trial record is found now, not on the first tick
        if storage and self.study is not None:
            check_same_study(
                [record for _, record in self._records.values()],
                self.study.get_trials(deepcopy=False),
                folder=root,
                source=f"--storage {shown_url(storage)}",
                hint="give the --storage it was run with",
            )

    def results(self) -> StudyResults:
        """The study's results as they are now on disk, the confirmation race's records included (a record is read
        again only when its file changed: the store replaces a record's file whole, so a new write is a new inode
        and mtime). Raises StoreError for a record under ``confirm/`` that is not a confirmation trial's."""
        store = self.store
        records = _read_changed(store.trial_numbers(), store.record_path, store.read_record, self._records)
        confirmed = _read_changed(
            store.confirm_numbers(),
            store.confirm_record_path,
            lambda number: store.read_record(number, confirm=True),
            self._confirmed,
        )
        for record in confirmed:
            if record.phase != "confirm":
                raise StoreError(f"{store.confirm_record_path(record.number)}: not a confirmation trial's record")
        if self.storage and self.study is not None:  # every driver's trials, this folder's records where they say more
            shared = StudyResults.from_study(self.space, self.study, records)  # the race keeps no Optuna trial
            return replace(shared, confirm_records={r.number: r for r in confirmed})
        return StudyResults.from_space(self.space, records, study=self.study, confirm_records=confirmed)

    def read(self) -> DashboardState:
        """The dashboard's state of the study as it is now on disk; a running trial whose process is gone is stale."""
        results = self.results()
        gone = {r.number for r in results.running() if process_gone(r.worker, r.started_at)}
        racing = [r for r in results.confirm_records.values() if r.state == "running"]
        confirm_gone = {r.number for r in racing if process_gone(r.worker, r.started_at)}
        return DashboardState.from_results(results, folder=self.store.root, gone=gone, confirm_gone=confirm_gone)


def _read_changed(
    numbers: list[int],
    path: Callable[[int], Path],
    read: Callable[[int], TrialRecord],
    known: dict[int, tuple[tuple[int, ...], TrialRecord]],
) -> list[TrialRecord]:
    """The records of ``numbers``, each read again only when its file's identity (inode, mtime, size) changed
    since it was kept in ``known``; one moved aside since it was listed is left out."""
    found = []
    for number in numbers:
        try:
            stat = path(number).stat()
        except FileNotFoundError:
            continue
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        kept = known.get(number)
        if kept is None or kept[0] != key:
            kept = (key, read(number))
            known[number] = kept
        found.append(kept[1])
    return found


def process_gone(worker: WorkerInfo, started: float | None = None) -> bool:
    """Whether the process a running trial's record names (``worker.host``, ``worker.pid``) is known to be gone.

    Only a process on this host can be checked: no process with that pid (``kill(pid, 0)`` fails with ESRCH), a
    zombie, or a process that began after the trial did (``started``, seconds since the epoch; the pid was used
    again) is gone. On Linux the start comes from ``/proc/<pid>/stat``, as ``ps`` reads it; a process of another
    user counts as alive. A record without a host or pid (a Ray trial before it reports), or naming another host
    (a Ray worker on another node, a study shared through ``--storage``) is not judged: False, it is shown as
    running, since a cheap look from here cannot tell.

    Example:
        >>> import os, socket
        >>> process_gone(WorkerInfo(host=socket.gethostname(), pid=os.getpid()))
        False
        >>> process_gone(WorkerInfo(host="elsewhere", pid=1)), process_gone(WorkerInfo())
        (False, False)
    """
    if worker.pid is None or not worker.host or worker.host != socket.gethostname():
        return False
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        pass
    except OSError:
        return False
    began, zombie = _process_start(worker.pid)
    if zombie:
        return True
    # timestamps in records are whole seconds and the boot time /proc gives too: 2 s of slack
    return began is not None and started is not None and began > started + 2.0


def _process_start(pid: int) -> tuple[float | None, bool]:
    """(when process ``pid`` began in seconds since the epoch, whether it is a zombie), from Linux's /proc;
    (None, False) where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) ": the command may hold spaces
        ticks = int(fields[19])  # field 22 of the whole line: starttime, in clock ticks after boot
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK"), fields[0] == "Z"
    except (OSError, ValueError, IndexError, StopIteration):
        return None, False


def watch(
    folder: Path | str,
    *,
    interval: float = 2.0,
    once: bool = False,
    console: Console | None = None,
    storage: str | None = None,
) -> None:
    """Show the dashboard of the study in ``folder`` until Ctrl-C, read again every ``interval`` seconds;
    ``once`` (or a console that is not a terminal): print one frame of the console's size and return. ``storage``:
    the study's storage URL, to show the trials of every driver that shares it (see :class:`StudyReader`).

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> screen = Console(file=io.StringIO(), width=100, height=30, record=True)
        >>> watch("tests/golden/golden", once=True, console=screen)
        >>> "6/6 done" in screen.export_text()
        True
    """
    from rich.console import Console

    from .live import LiveDashboard
    from .views import render

    reader = StudyReader(folder, storage=storage)
    console = console or Console()
    if once or not console.is_terminal:
        size = console.size
        console.print(render(reader.read(), size.width, size.height))
        return
    try:
        with LiveDashboard(reader.read(), console=console) as dashboard:
            while True:
                time.sleep(interval)
                dashboard.show(reader.read())
    except KeyboardInterrupt as stop:  # Ctrl-C is the way to leave, not an error; SIGTERM, SIGHUP ... exit 128 + N
        if isinstance(stop, Stopped) and stop.signum != signal.SIGINT:
            raise
        return


def _open_journal(store: ResultsStore, name: str) -> optuna.Study | None:
    """The study in the folder's journal, opened for reading only; ``None`` without a journal (``--storage``)."""
    if not store.journal_path.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ..search.journal import check_journal

    check_journal(store.journal_path)  # a damaged line is named (file and line); a record cut short is not damage

    class ReadOnlyJournal(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            raise StoreError(f"{store.journal_path}: watch and report never write to the study")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = JournalStorage(ReadOnlyJournal(str(store.journal_path)))
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StoreError(f"{store.journal_path}: holds no study named {name!r}") from None
    except StoreError:
        raise
    except (ValueError, OSError) as err:
        raise StoreError(f"{store.journal_path}: not a readable Optuna journal ({err})") from None
