"""``attnsearch watch``: the dashboard of a study, read from its folder by another process, never written to.

The trial records (``trials/<n>/trial.json``, written atomically by the runner) give every trial; the Optuna
journal, when there is one, adds how far each running trial has got. The journal is read the way Optuna's own
file backend reads it, without its lock, so the runner is never held up; the backend used here refuses to append,
so nothing this module does can add a line to the study.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..record import TrialRecord
from ..results import StudyResults
from ..search.store import ResultsStore, StoreError
from .state import DashboardState

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

__all__ = ["StudyReader", "watch"]


class StudyReader:
    """Reads a results folder (and its journal) again and again, as fresh :class:`StudyResults` each time.

    Raises ``StoreError`` (one line) for a folder that is not a study: missing, without ``space.yaml``, with an
    unreadable space or trial record, or with a journal that holds no study of that name.

    Example:
        >>> reader = StudyReader("tests/golden/golden")  # a tiny finished study the tests keep
        >>> reader.results().counts()["complete"]
        6
    """

    def __init__(self, folder: Path | str) -> None:
        self.store = ResultsStore(folder)
        root = self.store.root
        if not root.is_dir():
            raise StoreError(f"{root}: no such results folder")
        if not self.store.space_path.is_file():
            raise StoreError(f"{root}: not a results folder of attnsearch (no space.yaml)")
        self.space = self.store.read_space()
        assert self.space is not None
        self.study = _open_journal(self.store, self.space.name)
        self._records: dict[int, tuple[tuple[int, ...], TrialRecord]] = {}  # number -> (its file's identity, it)
        self.read()  # a corrupt trial record is found now, not on the first tick

    def results(self) -> StudyResults:
        """The study's results as they are now on disk (a record is read again only when its file changed: the
        store replaces a record's file whole, so a new write is a new inode and mtime)."""
        records = []
        for number in self.store.trial_numbers():
            try:
                stat = self.store.record_path(number).stat()
            except FileNotFoundError:  # moved aside since it was listed
                continue
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            known = self._records.get(number)
            if known is None or known[0] != key:
                known = (key, self.store.read_record(number))
                self._records[number] = known
            records.append(known[1])
        return StudyResults.from_space(self.space, records, study=self.study)

    def read(self) -> DashboardState:
        """The dashboard's state of the study as it is now on disk."""
        return DashboardState.from_results(self.results(), folder=self.store.root)


def watch(
    folder: Path | str,
    *,
    interval: float = 2.0,
    once: bool = False,
    console: Console | None = None,
) -> None:
    """Show the dashboard of the study in ``folder`` until Ctrl-C, read again every ``interval`` seconds;
    ``once`` (or a console that is not a terminal): print one frame of the console's size and return.

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

    reader = StudyReader(folder)
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
    except KeyboardInterrupt:  # the way to leave: not an error
        return


def _open_journal(store: ResultsStore, name: str) -> optuna.Study | None:
    """The study in the folder's journal, opened for reading only; ``None`` without a journal (``--storage``)."""
    if not store.journal_path.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

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
