"""The results folder: the only code that writes under ``results/``, and the one that reads it back.

```
<results>/<name>/
  space.yaml               the exact space file the study runs
  journal.log              Optuna's JournalStorage (file backend): survives a killed process, readable while written
  trials/<n>/trial.json    one TrialRecord per trial: candidate, state, reason, metrics, history, timings, versions
  trials/<n>/model.pt      trained weights (a plain state_dict), for the top-k trials when asked
  summary.json             best trial (or Pareto set) and the leaderboard
  replays/<n>-<tag>/       a trial trained again with another recipe: its trial.json and model.pt
```
Every file is written atomically (a temp file in the same folder, then ``os.replace``): a killed process leaves the
old version or the new one, never half of one. Records are read and written as
:class:`~attnsearch.record.TrialRecord` s only; every problem reading a folder is one :class:`StoreError` line.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AttnsearchError
from ..record import TrialRecord
from ..schema import plain

if TYPE_CHECKING:
    import torch

    from ..space import SearchSpace

__all__ = ["ResultsStore", "StoreError", "atomic_write", "read_state_dict"]

JOURNAL = "journal.log"
SPACE = "space.yaml"
SUMMARY = "summary.json"
RECORD = "trial.json"
WEIGHTS = "model.pt"


class StoreError(AttnsearchError):
    """A results folder that cannot be used; one line."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared like any file the user writes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

    def weights_path(self, number: int) -> Path:
        return self.trial_dir(number) / WEIGHTS

    # -- writing -------------------------------------------------------------------------------------------------

    def create(self, space_text: bytes) -> None:
        """Make the folder for a new study, with its space file."""
        self.root.mkdir(parents=True, exist_ok=True)
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
        shutil.move(str(self.root), str(target))
        return target

    def write_record(self, record: TrialRecord) -> None:
        atomic_write(self.record_path(record.number), record.to_json())

    def write_weights(self, number: int, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_write(self.weights_path(number), _weights_bytes(state_dict))

    def delete_weights(self, number: int) -> None:
        self.weights_path(number).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.root / SUMMARY, (json.dumps(plain(summary), indent=2, allow_nan=False) + "\n").encode())

    def write_replay(self, name: str, record: TrialRecord, state_dict: dict[str, torch.Tensor] | None) -> Path:
        """A replay's record (and weights) under ``replays/<name>/``, or ``<name>-2``, ... when that exists."""
        base = self.root / "replays" / name
        folder, n = base, 1
        while folder.exists():  # an earlier replay with the same overrides stays
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        if state_dict is not None:
            atomic_write(folder / WEIGHTS, _weights_bytes(state_dict))
        atomic_write(folder / RECORD, record.to_json())
        return folder

    # -- reading -------------------------------------------------------------------------------------------------

    def read_record(self, number: int) -> TrialRecord:
        path = self.record_path(number)
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
        """The study's space from ``space.yaml`` (its data is not looked for); None when the folder has none."""
        from ..space import SpaceError, parse_space

        if not self.space_path.is_file():
            return None
        try:
            return parse_space(self.read_space_source(), check_data=False)
        except SpaceError as err:
            raise StoreError(f"{self.space_path}: not a space of attnsearch ({err})") from None

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
