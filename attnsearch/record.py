"""The trial record: what ``trials/<n>/trial.json`` holds, as one typed, versioned, frozen dataclass.

The runner makes a :class:`TrialRecord` when a trial starts and again when it ends; replay makes one for a trial
it trained again. :class:`~attnsearch.search.store.ResultsStore` alone writes and reads them. Everything that
shows or judges a study (:class:`~attnsearch.results.StudyResults`, the dashboard, report, export, replay) reads
these fields, never the file.

On disk a record is standard JSON (NaN and infinities are written as null) with a ``schema`` version. Records
written before the version existed (schema 0, by attnsearch before November 2026) are still read: missing keys take
their defaults, a NaN becomes null, and a candidate's old ``train.first_val_epoch`` is dropped. A record whose key
or value is wrong is one :class:`~attnsearch.errors.AttnsearchError` line naming the file and the key.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import with_config

from .candidate import Candidate
from .errors import AttnsearchError
from .schema import STRICT, from_json, plain

__all__ = [
    "METRICS",
    "PERCENT_METRICS",
    "PLUGIN_KINDS",
    "RETRY_REASONS",
    "SCHEMA",
    "STATES",
    "EpochRecord",
    "Metrics",
    "PluginRecord",
    "RepeatRecord",
    "TrialRecord",
    "WorkerInfo",
    "counts_towards_target",
    "timestamp",
    "versions",
]

SCHEMA = 1  # the version of trial.json this module writes; 0: records without a version
Phase = Literal["search", "confirm"]
TrialState = Literal["running", "complete", "pruned", "failed", "infeasible"]
STATES: tuple[str, ...] = get_args(TrialState)
# the metrics a study may optimise (search.objectives[].metric)
ObjectiveMetric = Literal[
    "val_acc", "val_top5", "val_loss", "train_loss", "params", "flops", "latency_ms", "train_seconds"
]
METRICS: tuple[str, ...] = get_args(ObjectiveMetric)
PERCENT_METRICS = ("val_acc", "val_top5")  # fractions 0..1, shown in percent
# failures that are not the candidate's fault: the runner tries the candidate again and does not count them as done
RETRY_REASONS = ("killed", "interrupted", "worker_lost")
PluginKind = Literal["module", "backbone", "dataset"]
PLUGIN_KINDS: tuple[str, ...] = get_args(PluginKind)


# keys a record holds only when they have a value: most records have none of them
_WRITTEN_WHEN_SET = ("reused_from", "replay_of", "confirm_round", "confirm_of", "test_acc", "test_images")


def counts_towards_target(state: str, reason: str | None) -> bool:
    """Whether a trial that ended in ``state`` for ``reason`` counts towards the study's ``n_trials``.

    Example:
        >>> counts_towards_target("pruned", "pruned"), counts_towards_target("failed", "interrupted")
        (True, False)
    """
    if state == "running":
        return False
    return state != "failed" or reason not in RETRY_REASONS


def timestamp() -> str:
    """Local time with its UTC offset, as records write it: ``2026-11-22T10:30:13+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _seconds(text: str | None) -> float | None:
    """A record's timestamp as seconds since the epoch."""
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


@functools.cache
def versions() -> dict[str, str]:
    """The versions a trial ran with: attnsearch, Python, torch, torchvision, Optuna."""
    import platform

    import optuna
    import torch
    import torchvision

    from . import __version__

    return {
        "attnsearch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "optuna": optuna.__version__,
    }


def _present(value: Any) -> dict[str, Any]:
    """The fields of a dataclass that hold a value (absent ones are left out of the JSON)."""
    return {f.name: getattr(value, f.name) for f in fields(value) if getattr(value, f.name) is not None}


@with_config(STRICT)
@dataclass(frozen=True)
class Metrics:
    """A trial's figures. Scores are means over the trial's repeats; absent ones are None (and not written)."""

    val_acc: float | None = None  # top-1 on the validation images, 0..1
    val_top5: float | None = None  # None also when the model has fewer than 5 classes
    val_loss: float | None = None  # mean cross-entropy on validation (no label smoothing)
    train_loss: float | None = None  # mean training loss of the last epoch (with label smoothing)
    val_acc_std: float | None = None  # standard deviation of val_acc over repeats (2 or more): seed-to-seed noise
    val_acc_se: float | None = None  # standard error of val_acc from its val_images (Wilson; stats.accuracy_se)
    val_images: int | None = None  # validation images the final scores were measured on
    images_per_second: float | None = None  # training images per second
    train_seconds: float | None = None  # seconds in training steps, all repeats
    params: int | None = None
    flops: int | None = None  # one forward pass at batch 1; a multiply-add counts 2
    latency_ms: float | None = None  # one forward pass at batch 1 on the trial's device, median
    train_memory_bytes: int | None = None  # activations kept for backward by the first training step

    def value(self, metric: str) -> float | None:
        """``metric`` as a finite float, or None when it is absent or not finite.

        Example:
            >>> Metrics(val_acc=0.5, params=10).value("params"), Metrics().value("val_acc")
            (10.0, None)
        """
        found = getattr(self, metric, None) if metric in _METRIC_FIELDS else None
        if isinstance(found, bool) or not isinstance(found, (int, float)) or not math.isfinite(found):
            return None
        return float(found)

    def to_dict(self) -> dict[str, Any]:
        return _present(self)


_METRIC_FIELDS = frozenset(f.name for f in fields(Metrics))


@with_config(STRICT)
@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a trial's first repeat. An epoch that was not validated has ``val_images`` 0 and no scores."""

    epoch: int  # from 1
    train_loss: float | None  # mean training loss of the epoch (with label smoothing)
    val_acc: float | None  # 0..1
    val_top5: float | None
    val_loss: float | None
    val_images: int  # validation images scored after the epoch (0: not validated)
    lr: float  # learning rate of the epoch's last step
    seconds: float  # training and validation
    val_seconds: float  # validation alone


@with_config(STRICT)
@dataclass(frozen=True)
class RepeatRecord:
    """One seed of a trial with ``repeats`` > 1 (and the only one otherwise)."""

    seed: int
    state: str  # the trainer's: complete | pruned | failed
    val_acc: float | None
    val_top5: float | None
    val_loss: float | None
    train_loss: float | None
    images_per_second: float | None
    epochs_run: int


@with_config(STRICT)
@dataclass(frozen=True)
class WorkerInfo:
    """Where a trial ran. Under Ray also the node, its GPUs as the cluster numbers them, and the actor."""

    host: str | None = None
    pid: int | None = None
    device: str | None = None  # cpu, cuda:0 (a Ray worker sees its own GPUs from 0)
    threads: int | None = None  # torch threads: a replay uses as many to reproduce the score exactly
    node: str | None = None
    gpus: tuple[str, ...] | None = None
    actor: str | None = None
    error: str | None = None  # why the worker was lost

    def to_dict(self) -> dict[str, Any]:
        return _present(self)

    def describe(self) -> str:
        """``cpu``, ``cuda:0``; under Ray the GPU ids the cluster gave the worker (its own view is always cuda:0)."""
        return f"gpu {','.join(self.gpus)}" if self.gpus else (self.device or "")


@with_config(STRICT)
@dataclass(frozen=True)
class PluginRecord:
    """A plug-in whose ``kind`` of key the trial's candidate uses (:mod:`attnsearch.plugin_records`)."""

    name: str  # its import name
    file: str  # its source file, absolute, when the trial ran
    sha256: str  # of that source's bytes, hex: replay and export warn when the file no longer has it
    kind: PluginKind
    keys: tuple[str, ...]  # the keys of that kind the candidate uses (module keys in placements, ...)


@with_config(STRICT)
@dataclass(frozen=True)
class TrialRecord:
    """One trial as ``trial.json`` holds it.

    Example:
        >>> from attnsearch.candidate import BackboneSpec
        >>> record = TrialRecord(3, "complete", candidate=Candidate(BackboneSpec("vgg11", 0.25)),
        ...                      metrics=Metrics(val_acc=0.8125))
        >>> again = TrialRecord.from_json(record.to_json(), "trial.json")
        >>> again == record, again.score("val_acc"), again.label
        (True, 0.8125, 'baseline (nothing placed)')
    """

    number: int  # the Optuna trial number
    state: TrialState
    reason: str | None = None  # why a trial is not complete: pruned, killed, diverged, oom, an error's line ...
    candidate: Candidate | None = None
    params: dict[str, Any] = field(default_factory=dict)  # Optuna's parameters of the trial
    metrics: Metrics = field(default_factory=Metrics)
    history: tuple[EpochRecord, ...] = ()  # per epoch, first repeat
    repeats: tuple[RepeatRecord, ...] = ()  # per seed
    timings: dict[str, float] = field(default_factory=dict)  # build, costs, train, eval, total seconds
    worker: WorkerInfo = field(default_factory=WorkerInfo)
    classes: tuple[str, ...] = ()  # what each output of the trained model means
    retry_of: int | None = None  # the trial whose candidate this one tries again (killed, interrupted, lost)
    reused_from: int | None = None  # the trial whose outcome a duplicate candidate reuses
    started: str | None = None  # timestamp()
    finished: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    replay_of: int | None = None  # replays/ only: the trial trained again
    overrides: dict[str, float] = field(default_factory=dict)  # replays/ only: the recipe fields changed
    threads: int | None = None  # replays/ only: torch threads of the replay
    phase: Phase = "search"  # search: a trial of the search; confirm: a retraining of the confirmation race
    split: dict[str, Any] = field(default_factory=dict)  # how the data were split (Dataset.split): sizes, seed
    # -- confirmation trials only (phase "confirm", attnsearch.search.confirm); absent from other records ---------
    confirm_round: int | None = None  # the race's seed round, from 1 (the seed itself is the candidate's)
    confirm_of: int | None = None  # the search trial whose candidate it trains again; None: a baseline not tried
    test_acc: float | None = None  # top-1 on the test split, scored once after training; never used to select
    test_images: int | None = None  # test images it was scored on
    plugins: tuple[PluginRecord, ...] = ()  # the plug-ins the candidate uses; absent from a record without any
    schema: int = SCHEMA

    # -- what the views read -------------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The candidate written out, e.g. ``block3=cbam(kernel_size=7) block5=eca``."""
        return self.candidate.describe() if self.candidate is not None else ""

    def score(self, metric: str) -> float | None:
        """The recorded ``metric`` (a mean over repeats) as a finite float; None when absent or not finite."""
        return self.metrics.value(metric)

    def score_se(self, metric: str) -> float | None:
        """The standard error of :meth:`score`, or None where the record does not say.

        For ``val_acc`` and ``val_top5``: the binomial noise of the validation images (:func:`attnsearch.stats.
        accuracy_se`) and, with two or more repeats, the seed-to-seed noise of their mean (``val_acc_std /
        sqrt(repeats)``), added in variance. Other metrics have no recorded noise.

        Example:
            >>> record = TrialRecord(0, "complete", metrics=Metrics(val_acc=0.776, val_images=1000))
            >>> round(record.score_se("val_acc"), 4), record.score_se("params")
            (0.0132, None)
        """
        from .stats import accuracy_se

        metrics, value = self.metrics, self.score(metric)
        if metric not in PERCENT_METRICS or value is None or not metrics.val_images:
            return None
        binomial = accuracy_se(min(max(value, 0.0), 1.0), metrics.val_images)
        seeds = sum(r.state == "complete" for r in self.repeats)
        spread = metrics.val_acc_std if metric == "val_acc" and seeds > 1 else None
        return math.sqrt(binomial**2 + (spread**2 / seeds if spread is not None else 0.0))

    @property
    def counts_towards_target(self) -> bool:
        return counts_towards_target(self.state, self.reason)

    @property
    def started_at(self) -> float | None:
        """When the trial started, in seconds since the epoch."""
        return _seconds(self.started)

    @property
    def finished_at(self) -> float | None:
        """When the trial ended, in seconds since the epoch."""
        return _seconds(self.finished)

    def reuse(self, number: int, params: dict[str, Any], *, retry_of: int | None, finished: str) -> TrialRecord:
        """This trial's outcome, recorded for trial ``number``, a duplicate of its candidate that reuses it."""
        return replace(
            self,
            number=number,
            params=params,
            reused_from=self.number,
            retry_of=retry_of,
            started=None,
            finished=finished,
        )

    # -- JSON ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Standard JSON values, in a stable key order; replay-only keys only on replays. A NaN or an infinity is
        written as null (absent), and left out of ``timings`` and ``overrides``, which hold numbers only, so that
        every record written reads back."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "number": self.number,
            "state": self.state,
            "reason": self.reason,
            "placements": self.label if self.candidate is not None else None,  # for people reading the file
            "candidate": self.candidate.to_dict() if self.candidate is not None else None,
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in d or f.name == "schema" or (f.name in _WRITTEN_WHEN_SET and value is None):
                continue
            if f.name in ("overrides", "threads") and self.replay_of is None:
                continue
            if f.name == "plugins" and not value:  # records of built-ins alone read as they always did
                continue
            if f.name in ("timings", "overrides"):  # numbers only: a value that is not finite is left out (unknown)
                value = {k: v for k, v in value.items() if not isinstance(v, float) or math.isfinite(v)}
            d[f.name] = value
        return plain(d)

    def to_json(self) -> bytes:
        """The record as trial.json's bytes: indented, standard JSON only (no NaN, no infinities)."""
        return (json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: Any, where: str = "trial record") -> TrialRecord:
        """A record from its JSON data; an AttnsearchError naming ``where`` and the key when it is not one."""
        if not isinstance(data, dict):
            raise AttnsearchError(f"{where}: not a trial record (a JSON object is expected)")
        version = data.get("schema", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise AttnsearchError(f"{where}: schema must be a version number, got {version!r:.40}")
        if version > SCHEMA:
            raise AttnsearchError(
                f"{where}: written by a newer attnsearch (record schema {version}; this version reads up to {SCHEMA})"
            )
        if not isinstance(data.get("number"), int) or isinstance(data.get("number"), bool):
            raise AttnsearchError(f"{where}: not a trial record (no trial number)")
        data = plain(data)  # a schema-0 record may hold NaN: it reads as null
        data.pop("placements", None)  # written from the candidate, for people; not read back
        if version == 0:
            data["schema"] = SCHEMA
            data["candidate"] = Candidate.upgrade(data.get("candidate"))
        return from_json(cls, data, file=where)

    @classmethod
    def from_json(cls, text: bytes | str, where: str = "trial record") -> TrialRecord:
        """A record from trial.json's text (NaN tolerated in schema-0 records); errors as :meth:`from_dict`."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AttnsearchError(f"{where}: not a readable trial record ({err})") from None
        return cls.from_dict(data, where)
