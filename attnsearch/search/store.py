"""The results folder: the only code that writes under ``results/``.

```
<results>/<name>/
  space.yaml               the exact space file the study runs
  journal.log              Optuna's JournalStorage (file backend): survives a killed process, readable while written
  trials/<n>/trial.json    one record per trial: candidate, state, reason, metrics, history, timings, versions
  trials/<n>/model.pt      trained weights (a plain state_dict), for the top-k trials when asked
  summary.json             best trial (or Pareto set) and the leaderboard
```
Every file is written atomically (a temp file in the same folder, then ``os.replace``): a killed process leaves the
old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import AttnsearchError

__all__ = ["RETRY_REASONS", "ResultsStore", "StoreError", "atomic_write", "timestamp"]

JOURNAL = "journal.log"
SPACE = "space.yaml"
SUMMARY = "summary.json"


# Failures that are not the candidate's fault: the runner tries the candidate again and does not count them as done.
RETRY_REASONS = ("killed", "interrupted", "worker_lost")


def timestamp() -> str:
    """Local time with its UTC offset, as records write it: ``2026-11-22T10:30:13+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
        >>> store = ResultsStore(Path("results") / "vgg16-shapes-quick")
        >>> [record["number"] for record in store.trials()]  # doctest: +SKIP
        [0, 1, 2]
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL

    @property
    def space_path(self) -> Path:
        return self.root / SPACE

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def weights_path(self, number: int) -> Path:
        return self.trial_dir(number) / "model.pt"

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

    def write_trial(self, record: dict[str, Any]) -> None:
        atomic_write(self.trial_dir(record["number"]) / "trial.json", _dumps(record))

    def write_weights(self, number: int, state_dict: dict[str, Any]) -> None:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state_dict, buffer)
        atomic_write(self.weights_path(number), buffer.getvalue())

    def delete_weights(self, number: int) -> None:
        self.weights_path(number).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.root / SUMMARY, _dumps(summary))

    # -- reading -------------------------------------------------------------------------------------------------

    def read_trial(self, number: int) -> dict[str, Any]:
        path = self.trial_dir(number) / "trial.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{path}: no such trial record") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"{path}: not a readable trial record ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("number"), int):
            raise StoreError(f"{path}: not a trial record (no trial number)")
        return record

    def trial_numbers(self) -> list[int]:
        folder = self.root / "trials"
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / "trial.json").exists())

    def trials(self) -> Iterator[dict[str, Any]]:
        for number in self.trial_numbers():
            yield self.read_trial(number)


def _dumps(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
