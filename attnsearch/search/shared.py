"""A study shared by several drivers: what each Optuna trial carries for attnsearch, and its trials read back.

Several ``attnsearch run`` processes can share one study through ``--storage URL`` (e.g. one per cluster, each with
its own results folder). A folder holds the records of the trials its own driver ran; the study in the storage
holds every trial of every driver with the user attributes below, which is how a driver sees what the others train
or have finished, and how ``watch --storage`` and ``report --storage`` show the whole study.

``user_attrs["attnsearch"]`` (:data:`ATTR`), set when a trial is asked and updated when it ends:

- ``candidate``: the trial's :class:`~attnsearch.candidate.Candidate` as a dict; ``key``: its
  :meth:`~attnsearch.candidate.Candidate.key` (equal candidates share it);
- ``retry_of``: the trial whose candidate it tries again (killed, interrupted, worker lost), or None;
- ``stamp``: its record's ``started`` timestamp (``finished`` for a duplicate that reused an outcome); with the
  trial's number, what tells its record from a record of another study;
- ``driver``: ``{"host", "pid", "folder"}``, the run that asked it (its results folder, absolute);
- once it ended: ``state``, ``reason`` and ``metrics``, as in its record; ``reused_from`` for a duplicate that
  reused the outcome of that trial;
- ``skipped_for``: a duplicate of a candidate that trial was training in another driver: told failed at once,
  never trained, not counted towards ``n_trials``, recorded in no folder.

``user_attrs["attnsearch.epoch"]`` (:data:`EPOCH_ATTR`): while it runs, the last epoch it trained that was not
validated (validated epochs are its intermediate values), so that ``watch`` shows its progress.

``user_attrs["attnsearch.record"]`` (:data:`RECORD_ATTR`): once it ended, its whole record
(:meth:`~attnsearch.record.TrialRecord.to_dict`), the same as the ``trial.json`` its driver wrote.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..record import TrialRecord
from .store import StoreError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from ..candidate import Candidate

__all__ = [
    "ATTR",
    "EPOCH_ATTR",
    "RECORD_ATTR",
    "Driver",
    "asked",
    "attrs",
    "check_same_study",
    "foreign",
    "is_skipped",
    "open_shared_study",
    "peek_trials",
    "read_trials",
    "shown_url",
    "stamp",
    "store_outcome",
    "study_records",
    "trial_record",
]

ATTR = "attnsearch"  # the trial's state as attnsearch keeps it
RECORD_ATTR = "attnsearch.record"  # the finished trial's whole record
EPOCH_ATTR = "attnsearch.epoch"  # a running trial's last epoch trained, validated or not (for watch)


def attrs(trial: FrozenTrial) -> dict[str, Any]:
    """``trial``'s :data:`ATTR` (empty for a trial asked a moment ago, or by something else)."""
    found = trial.user_attrs.get(ATTR)
    return found if isinstance(found, dict) else {}


def stamp(record: TrialRecord) -> str | None:
    """The timestamp that identifies a record: when it started, or for a reused duplicate when it was recorded."""
    return record.started or record.finished


def is_skipped(trial: FrozenTrial) -> bool:
    """A duplicate told failed because another driver was training its candidate (not a trial of the study's)."""
    return attrs(trial).get("skipped_for") is not None


@dataclass(frozen=True)
class Driver:
    """The ``attnsearch run`` process that asked a trial: its host, its pid, its results folder (absolute)."""

    host: str
    pid: int
    folder: str

    @classmethod
    def here(cls, folder: Path | str) -> Driver:
        """This process, running the study of ``folder``."""
        return cls(socket.gethostname(), os.getpid(), str(Path(folder).resolve()))

    @classmethod
    def of(cls, trial: FrozenTrial) -> Driver | None:
        """The driver that asked ``trial``; None when it did not say (an older attnsearch, or not asked yet)."""
        found = attrs(trial).get("driver")
        if not isinstance(found, dict):
            return None
        try:
            return cls(str(found["host"]), int(found["pid"]), str(found["folder"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gone(self) -> bool:
        """Whether this driver's process is known to have ended: only a process on this host can be looked at
        (``kill(pid, 0)``); one elsewhere, or this process, is taken to be alive."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # PermissionError: a process of another user has that pid
            return False
        return False


def asked(candidate: Candidate, *, retry_of: int | None, started: str, driver: Driver) -> dict[str, Any]:
    """:data:`ATTR` of a trial just asked: its candidate and key, the trial it retries, its stamp, its driver."""
    return {
        "candidate": candidate.to_dict(),
        "key": candidate.key(),
        "retry_of": retry_of,
        "stamp": started,
        "driver": driver.to_dict(),
    }


def store_outcome(
    storage: optuna.storages.BaseStorage, trial_id: int, known: dict[str, Any], record: TrialRecord, **more: Any
) -> None:
    """Keep a trial's final ``record`` in the study, before it is told: :data:`ATTR` (``known`` with the record's
    state, reason, metrics and stamp, and ``more``) and the whole record as :data:`RECORD_ATTR`."""
    ended = {**known, **more, "state": record.state, "reason": record.reason, "metrics": record.metrics.to_dict()}
    if stamp(record) is not None:
        ended["stamp"] = stamp(record)
    storage.set_trial_user_attr(trial_id, ATTR, ended)
    storage.set_trial_user_attr(trial_id, RECORD_ATTR, record.to_dict())


# ------------------------------------------------------------------------------------------------ reading back


def _timestamp(moment: datetime | None) -> str | None:
    # Optuna's datetimes are naive local time; records write local time with its offset
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S%z") if moment is not None else None


def trial_record(trial: FrozenTrial, local: TrialRecord | None = None) -> TrialRecord | None:
    """``trial`` as a record: the one it keeps once finished (:data:`RECORD_ATTR`), else ``local`` (the record of a
    results folder) when it agrees on running or not, else one made from :data:`ATTR` (a trial of an older
    attnsearch, or running in another driver). None for a waiting trial, a skipped duplicate, and a running one
    that does not say its candidate yet. Raises AttnsearchError (one line) for a kept record that is not one."""
    from optuna.trial import TrialState

    if trial.state == TrialState.WAITING or is_skipped(trial):
        return None
    running = trial.state == TrialState.RUNNING
    where = f"trial {trial.number} of the study"
    if not running and trial.user_attrs.get(RECORD_ATTR) is not None:
        return TrialRecord.from_dict(trial.user_attrs[RECORD_ATTR], f"{where} ({RECORD_ATTR})")
    if local is not None and (local.state == "running") == running:
        return local
    known = attrs(trial)
    if known.get("candidate") is None:
        return local
    states = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    data = {
        "number": trial.number,
        "state": "running" if running else known.get("state") or states.get(trial.state, "failed"),
        "reason": None if running else known.get("reason"),
        "candidate": known["candidate"],
        "params": dict(trial.params),
        "metrics": {} if running else known.get("metrics") or {},
        "retry_of": known.get("retry_of"),
        "reused_from": known.get("reused_from"),
        "started": known.get("stamp") or _timestamp(trial.datetime_start),
        "finished": None if running else _timestamp(trial.datetime_complete),
        "schema": 1,
    }
    return TrialRecord.from_dict(data, f"{where} ({ATTR})")


def study_records(trials: Iterable[FrozenTrial], local: Iterable[TrialRecord] = ()) -> list[TrialRecord]:
    """Every trial of a study as records (:func:`trial_record`), by number; ``local``: a folder's own records."""
    mine = {r.number: r for r in local}
    found: dict[int, TrialRecord] = {}
    for trial in trials:
        record = trial_record(trial, mine.get(trial.number))
        if record is not None:
            found[trial.number] = record
    return [found[n] for n in sorted(found)]


def foreign(records: Iterable[TrialRecord], trials: Sequence[FrozenTrial] | None) -> str | None:
    """Why a folder's ``records`` are not trials of the study whose ``trials`` are given (None: no such study), or
    None when each one is: the study has a trial of its number, with its candidate and, where both say, its stamp;
    and a finished record is the one the trial keeps (:data:`RECORD_ATTR`) as far as its times go (started,
    finished and the timings, in microseconds): two studies of one space and seed have the same candidates at the
    same numbers, and may start them in the same second.

    Example:
        >>> record = TrialRecord(0, "complete", started="2026-11-22T10:30:13+0000")
        >>> foreign([record], None), foreign([record], [])
        ('trial 0 is not in it: it holds no study of that name', 'trial 0 is not in it')
    """
    mine = sorted(records, key=lambda r: r.number)
    if trials is None:
        return f"trial {mine[0].number} is not in it: it holds no study of that name" if mine else None
    by_number = {t.number: t for t in trials}
    for record in mine:
        trial = by_number.get(record.number)
        if trial is None:
            return f"trial {record.number} is not in it"
        known = attrs(trial)
        if record.candidate is not None and known.get("key") not in (None, record.candidate.key()):
            return f"its trial {record.number} is another candidate"
        ours, theirs = stamp(record), known.get("stamp")
        if ours is not None and theirs is not None and ours != theirs:
            return f"its trial {record.number} is another one (started {theirs}, the folder's {ours})"
        kept = trial.user_attrs.get(RECORD_ATTR)
        if record.state != "running" and isinstance(kept, dict) and _times(kept) != _times(record.to_dict()):
            return f"its trial {record.number} is another one (other timings)"
    return None


def _times(record: dict[str, Any]) -> tuple[Any, ...]:
    return record.get("started"), record.get("finished"), record.get("timings")


def read_trials(storage: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial] | None:
    """The trials of study ``name`` in ``storage``; None when it holds no such study. Writes nothing."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_all_trials(study_id, deepcopy=False)


_UNOPENED: list[FrozenTrial] = []


def peek_trials(url: str, name: str, *, tries: int = 4) -> list[FrozenTrial] | None:
    """The trials of study ``name`` at the storage ``url`` without creating the study there (None: no such study).

    Opening an RDB storage creates its tables the first time; two drivers that start together on a new database
    race to create them, and PostgreSQL refuses one of the two (a duplicate key in ``pg_type``): a failed opening is
    tried again after a moment, ``tries`` times in all. A URL that cannot be opened gives no trials: opening the
    study then says what is wrong with it.
    """
    import time

    import optuna

    database = _sqlite_file(url)
    if database is not None and not database.exists():
        return None  # no study there, and looking must not make the file (a refused run changes nothing)
    for attempt in range(tries):
        try:
            storage = optuna.storages.get_storage(url)
            break
        except Exception:  # the study's opening says what is wrong with the URL
            if attempt == tries - 1:
                return _UNOPENED
            time.sleep(0.25 * 2**attempt)
    try:
        return read_trials(storage, name)
    finally:
        engine = getattr(getattr(storage, "_backend", storage), "engine", None)
        if engine is not None:  # an RDB storage: its pooled connections go now, not when collected
            engine.dispose()


def shown_url(url: str) -> str:
    """A storage URL as it may be printed: its password, if any, masked."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: printed as given
        return url


def _sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database, or SQLite in memory)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: Optuna says so
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_shared_study(url: str, name: str) -> optuna.Study:
    """Study ``name`` at the storage ``url``, to read (``watch``, ``report``); StoreError (one line) when the URL
    cannot be opened or holds no such study. An SQLite file that does not exist is refused rather than made."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = _sqlite_file(url)
    if database is not None and not database.is_file():
        raise StoreError(f"--storage {shown_url(url)}: no such database file ({database})")
    try:
        storage = optuna.storages.get_storage(url)
    except Exception as err:  # its scheme, driver, server or file: the user's to fix
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise StoreError(f"--storage {shown_url(url)}: cannot open it ({type(err).__name__}: {reason})") from None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StoreError(f"--storage {shown_url(url)}: holds no study named {name!r}") from None


def check_same_study(
    records: Sequence[TrialRecord], trials: Sequence[FrozenTrial] | None, *, folder: Path, source: str, hint: str
) -> None:
    """A StoreError (one line) when the records of ``folder`` are not trials of the study in ``source`` (whose
    ``trials`` are given, None when it has no such study): see :func:`foreign`. ``hint``: what to do instead."""
    why = foreign(records, trials)
    if why is not None:
        raise StoreError(f"{folder} holds trials of another study than the one in {source} ({why}); {hint}")
