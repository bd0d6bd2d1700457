"""The results folder: the only code that writes under ``results/``, and the one that reads it back.

```
<results>/<name>/
  space.yaml               the exact space file the study runs
  journal.log              Optuna's JournalStorage (file backend): survives a killed process, readable while written
  trials/<n>/trial.json    one TrialRecord per trial: candidate, state, reason, metrics, history, timings, versions
  trials/<n>/model.pt      trained weights (a plain state_dict), for the top-k trials when asked
  summary.json             best trial (or Pareto set) and the leaderboard
  replays/<n>-<tag>/       a trial trained again with another recipe: its trial.json and model.pt
  confirm/<n>/trial.json   the confirmation race's trials (phase confirm), numbered on their own: no Optuna trial
```
Every file is written atomically (a temp file in the same folder, then ``os.replace``): a killed process leaves the
old version or the new one, never half of one. Records are read and written as
:class:`~attnsearch.record.TrialRecord` s only; every problem reading a folder is one :class:`StoreError` line, and
so is every write the system refuses (read-only, no permission, disk full: the path and the system's reason).
:func:`check_writable` probes a folder before a long job that will write there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AttnsearchError
from ..record import TrialRecord
from ..schema import plain

if TYPE_CHECKING:
    import torch

    from ..space import SearchSpace

__all__ = [
    "FolderClaim",
    "ResultsStore",
    "StoreError",
    "atomic_write",
    "check_writable",
    "read_state_dict",
    "write_files",
]

JOURNAL = "journal.log"
SPACE = "space.yaml"
SUMMARY = "summary.json"
RECORD = "trial.json"
CONFIRM = "confirm"
WEIGHTS = "model.pt"


class StoreError(AttnsearchError):
    """A results folder that cannot be used; one line."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, flushed to disk, then ``os.replace``.

    The folders above ``path`` are made as needed. A write that fails (a read-only mount, no permission, a full
    disk or quota) raises :class:`StoreError` naming the path and the system's reason; the old file, if any, is
    left as it was and no temp file remains. The pattern follows Python's own advice for ``os.replace``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _cannot_write(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared like any file
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _cannot_write(path, err) from None
        raise


def check_writable(folder: Path | str) -> None:
    """Raise :class:`StoreError` unless files can be written in ``folder``, before a long job that would write there.

    The probe creates a temp file holding one byte and removes it, in ``folder`` or, where it does not exist yet,
    in the nearest folder above it (the one a write would make its folders in); nothing is left behind. It catches
    a read-only mount, a folder without write permission, a path through a file and a disk already full; a disk
    that fills later is caught by the write itself (:func:`atomic_write`).
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"{folder}: cannot write ({os.strerror(errno.ENOTDIR)}: {probe})")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".attnsearch-probe-", suffix=".tmp")
    except OSError as err:
        raise _cannot_write(folder, err) from None
    try:
        os.write(fd, b"\0")  # an empty file fits on a full disk; one byte does not
    except OSError as err:
        raise _cannot_write(folder, err) from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_files(files: Mapping[Path, bytes]) -> None:
    """Write several files that belong together (an export, a report), each with :func:`atomic_write`.

    Their folders are probed first (:func:`check_writable`); when one write fails, the files and folders this call
    created are removed again before its :class:`StoreError` is raised (a file that existed stays replaced or
    untouched, never half written).
    """
    for folder in dict.fromkeys(path.parent for path in files):
        check_writable(folder)
    made: list[Path] = []
    try:
        for path, data in files.items():
            made += [p for p in (path, *path.parents) if not p.exists()]
            atomic_write(path, data)
    except StoreError:
        for path in sorted(set(made), key=lambda p: (p.is_dir(), -len(p.parts))):  # files, then folders inside out
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise


def _cannot_write(path: Path, err: OSError) -> StoreError:
    """One line: the path and the system's reason, with the place it failed when that is another (a folder above)."""
    reason = err.strerror or str(err) or type(err).__name__
    failed = Path(os.fsdecode(err.filename)) if isinstance(err.filename, (str, bytes, os.PathLike)) else None
    temp = failed is not None and failed.parent == path.parent and failed.name.startswith(f".{path.name}.")
    if failed is not None and failed != path and not temp:
        reason += f": {failed}"
    return StoreError(f"{path}: cannot write ({reason})")


class FolderClaim:
    """The one run that writes a results folder: an exclusive ``flock(2)`` on the folder itself, taken by
    :meth:`take` and let go by :meth:`release`, or by the kernel when the process ends however it ends (``kill -9``
    and a lost node included, so a claim is never stale). A second ``attnsearch run`` on the same folder is refused
    instead of taking the first one's live trial for a dead one. Readers (``watch``, ``report``, ``replay``) never
    claim. On a file system without ``flock`` the folder is simply not claimed.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> first, second = FolderClaim(folder), FolderClaim(folder)
        >>> first.take()
        >>> second.take()
        Traceback (most recent call last):
        attnsearch.search.store.StoreError: ...: another attnsearch run is writing this folder; ...
        >>> first.release(); second.take(); second.release()
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.fd: int | None = None

    def take(self) -> None:
        """Claim the folder, when it exists and is not claimed by this object yet. Raises StoreError (one line)
        when another process holds it."""
        if self.fd is not None or not self.folder.is_dir():
            return
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return  # not readable: the first write will say so
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.folder}: another attnsearch run is writing this folder; wait for it to end (attnsearch "
                "watch shows it), or give this run a --results of its own"
            ) from None
        except OSError:  # no flock here (some network file systems)
            os.close(fd)
            return
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ResultsStore:
    """One study's folder. Reading works on any copy of it, with or without the Optuna journal.

    Example:
        >>> store = ResultsStore("tests/golden/golden")  # a tiny finished study the tests keep
        >>> [(record.number, record.label) for record in store.read_records()][:2]
        [(0, 'baseline (nothing placed)'), (1, 'block5=eca')]
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: Path | str) -> ResultsStore:
        """The study folder at ``root``; a StoreError when it is missing or holds no trial record."""
        store = cls(root)
        if not store.root.is_dir():
            raise StoreError(f"{store.root}: no such results folder")
        if not store.trial_numbers():
            raise StoreError(f"{store.root}: no trial records (expected trials/<n>/{RECORD})")
        return store

    # -- paths ---------------------------------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL

    @property
    def space_path(self) -> Path:
        return self.root / SPACE

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def record_path(self, number: int) -> Path:
        return self.trial_dir(number) / RECORD

    def confirm_record_path(self, number: int) -> Path:
        """Where confirmation trial ``number`` is recorded (its numbers are not Optuna's: see
        :mod:`attnsearch.search.confirm`)."""
        return self.root / CONFIRM / str(number) / RECORD

    def weights_path(self, number: int) -> Path:
        return self.trial_dir(number) / WEIGHTS

    # -- writing -------------------------------------------------------------------------------------------------

    def create(self, space_text: bytes) -> None:
        """Make the folder for a new study (or take an existing one), with its space file: the run's first write,
        before any trial. A StoreError naming the folder and the system's reason when it cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _cannot_write(self.root, err) from None
        atomic_write(self.space_path, space_text)

    def move_aside(self) -> Path | None:
        """``--fresh``: rename an existing folder to ``<name>.old-<timestamp>`` and return where it went."""
        if not self.root.exists():
            return None
        target = self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while target.exists():
            target = self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            n += 1
        try:
            shutil.move(str(self.root), str(target))
        except OSError as err:
            raise StoreError(f"{self.root}: cannot move it aside to {target.name} ({err.strerror or err})") from None
        return target

    def write_record(self, record: TrialRecord) -> None:
        """Write a trial's record: under ``trials/``, or ``confirm/`` for a confirmation trial (its phase); with the
        plug-ins its candidate uses (:func:`attnsearch.plugin_records.with_plugins`)."""
        from ..plugin_records import with_plugins

        path = self.confirm_record_path(record.number) if record.phase == "confirm" else self.record_path(record.number)
        atomic_write(path, with_plugins(record).to_json())

    def write_weights(self, number: int, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_write(self.weights_path(number), _weights_bytes(state_dict))

    def delete_weights(self, number: int) -> None:
        try:
            self.weights_path(number).unlink(missing_ok=True)
        except OSError as err:
            raise _cannot_write(self.weights_path(number), err) from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.root / SUMMARY, (json.dumps(plain(summary), indent=2, allow_nan=False) + "\n").encode())

    def write_replay(self, name: str, record: TrialRecord, state_dict: dict[str, torch.Tensor] | None) -> Path:
        """A replay's record (and weights) under ``replays/<name>/``, or ``<name>-2``, ... when that exists.

        A StoreError when they cannot be written; then nothing of this replay stays (see :func:`write_files`)."""
        base = self.root / "replays" / name
        folder, n = base, 1
        while folder.exists():  # an earlier replay with the same overrides stays
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        from ..plugin_records import with_plugins

        files = {folder / WEIGHTS: _weights_bytes(state_dict)} if state_dict is not None else {}
        # the weights first: a record means both
        write_files({**files, folder / RECORD: with_plugins(record).to_json()})
        return folder

    # -- reading -------------------------------------------------------------------------------------------------

    def read_record(self, number: int, *, confirm: bool = False) -> TrialRecord:
        """Trial ``number``'s record (``confirm``: confirmation trial ``number``'s); a StoreError when it cannot
        be read."""
        path = self.confirm_record_path(number) if confirm else self.record_path(number)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path}: no such trial record") from None
        except OSError as err:
            raise StoreError(f"{path}: not a readable trial record ({err})") from None
        try:
            return TrialRecord.from_json(text, str(path))
        except AttnsearchError as err:
            raise StoreError(str(err)) from None

    def read_finished(self, number: int) -> TrialRecord:
        """Trial ``number``'s record; a StoreError unless it is complete (export and replay need a trained one)."""
        record = self.read_record(number)
        if record.state != "complete" or record.candidate is None:
            why = f" ({record.reason})" if record.reason else ""
            raise StoreError(f"trial {number} is {record.state}{why:.80}, not complete")
        return record

    def trial_numbers(self) -> list[int]:
        folder = self.root / "trials"
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / RECORD).exists())

    def read_records(self) -> list[TrialRecord]:
        """Every trial's record, by number."""
        return [self.read_record(number) for number in self.trial_numbers()]

    def confirm_numbers(self) -> list[int]:
        """The numbers of the confirmation trials recorded under ``confirm/``."""
        folder = self.root / CONFIRM
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / RECORD).exists())

    def read_confirm_records(self) -> list[TrialRecord]:
        """Every confirmation trial's record, by number; a StoreError for one that is not a confirmation trial's.

        Example:
            >>> ResultsStore("tests/golden/golden").read_confirm_records()  # a study without a race
            []
        """
        found = [self.read_record(number, confirm=True) for number in self.confirm_numbers()]
        for record in found:
            if record.phase != "confirm":
                raise StoreError(f"{self.confirm_record_path(record.number)}: not a confirmation trial's record")
        return found

    def kept_weights(self) -> set[int]:
        """The trials whose trained weights are kept."""
        return {n for n in self.trial_numbers() if self.weights_path(n).exists()}

    def read_weights(self, number: int) -> dict[str, torch.Tensor]:
        """Trial ``number``'s kept weights (see :func:`read_state_dict`)."""
        return read_state_dict(self.weights_path(number))

    def read_space_source(self) -> Any:
        """``space.yaml`` as parsed YAML (a StoreError when it is not readable)."""
        from ..yamlfile import YamlError, read_yaml

        try:
            return read_yaml(self.space_path)
        except YamlError as err:
            raise StoreError(f"{self.space_path}: not a readable space file ({err})") from None

    def read_space(self) -> SearchSpace | None:
        """The study's space from ``space.yaml`` (its data is not looked for); None when the folder has none. A space
        whose plug-ins are not loaded (no ``--plugin``) is read once the plug-ins its records name are loaded from
        their recorded files (:func:`attnsearch.plugin_records.load_recorded`; one line when one is gone)."""
        from ..plugin_records import load_recorded, missing_plugins
        from ..space import SpaceError, parse_space

        if not self.space_path.is_file():
            return None
        for attempt in (1, 2):
            try:
                return parse_space(self.read_space_source(), check_data=False)
            except SpaceError as err:
                records = self.read_records()
                if attempt == 2 or not missing_plugins(records):
                    raise StoreError(f"{self.space_path}: not a space of attnsearch ({err})") from None
                load_recorded(records, warn=lambda _line: None)  # the commands that build models warn
        return None

    def read_summary_objectives(self) -> tuple[tuple[str, str], ...] | None:
        """The objectives ``summary.json`` names, for a folder without ``space.yaml``; None without a summary."""
        from ..record import METRICS

        path = self.root / SUMMARY
        if not path.exists():
            return None
        try:
            found = json.loads(path.read_text(encoding="utf-8"))["objectives"]
            objectives = tuple((item["metric"], item["direction"]) for item in found)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise StoreError(f"{path}: not a readable summary ({type(err).__name__}: {err})") from None
        for metric, direction in objectives:
            if metric not in METRICS or direction not in ("maximize", "minimize"):
                raise StoreError(f"{path}: the study's objectives are not readable ({metric!r:.40}, {direction!r:.20})")
        return objectives or None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict (name -> tensor), loaded with ``weights_only=True``: a pickle running code is refused."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such weights file") from None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StoreError(f"{path}: not a weights file that loads safely ({first[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise StoreError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state


def _weights_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()
