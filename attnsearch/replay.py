"""Replay a trial: rebuild its candidate and recipe from ``trial.json`` alone and train it again.

Without overrides a replay checks a record: on the CPU the trainer is deterministic, so the replay must reproduce
the recorded validation accuracy exactly (and the recorded weights bit for bit, where ``model.pt`` was kept). That
holds for the same torch thread count only: intra-op threads split the reductions of the backward passes
differently, so weights drift in the last bits and an accuracy can move. A replay therefore uses the thread count
the search used: the record's ``worker.threads`` where it has one, else the study's ``execution.threads`` from its
``space.yaml``, else torch's default (all cores, as a search with no ``threads`` setting ran). On CUDA, kernels with
atomic adds are not bit-reproducible, and a replay within :data:`CUDA_TOLERANCE` counts as reproduced.

With recipe overrides (``epochs``, ``batch_size``, ``lr``) a replay is "now train it properly": the result is a new
record under ``RESULTS_DIR/replays/<n>-<tag>/`` (``trial.json`` with ``replay_of``, and ``model.pt``), written
atomically; the trial's own folder is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .candidate import Candidate
from .data import Dataset, load_dataset
from .device import resolve_device
from .errors import AttnsearchError
from .record import TrialRecord, timestamp, versions
from .results import StudyResults
from .search.store import ResultsStore, StoreError, check_writable
from .search.worker import TrialOutcome, run_candidate

__all__ = [
    "CUDA_TOLERANCE",
    "OVERRIDES",
    "ReplayNotSaved",
    "ReplayResult",
    "ranking_agreement",
    "replay_trial",
    "replay_trials",
    "spearman",
]

CUDA_TOLERANCE = 0.01  # val_acc, 0..1: one percentage point
OVERRIDES = {"epochs": "e", "batch_size": "b", "lr": "lr"}  # recipe field -> its part of a replay folder's name
COMPARED = ("val_acc", "val_top5", "val_loss", "train_loss")


@dataclass(frozen=True)
class ReplayResult:
    """One trial trained again, next to its record.

    Example:
        >>> [r] = replay_trials("results/tiny", [2], device="cpu")  # doctest: +SKIP
        >>> r.recorded["val_acc"] == r.replayed["val_acc"], r.matches  # doctest: +SKIP
        (True, True)
    """

    trial: int
    placements: str
    metric: str  # the study's first objective: the score the ranking compares
    recorded: dict[str, float | None]  # the metrics of COMPARED and the score metric, as recorded
    replayed: dict[str, float | None]  # the same, from the replay
    state: str  # the replay's: complete | failed (with its reason)
    reason: str | None
    overrides: dict[str, Any]  # recipe fields changed; empty for a plain replay
    device: str
    threads: int | None  # torch threads of the replay (None: torch's default)
    tolerance: float | None  # allowed |val_acc difference|; None when overrides make it a different run
    matches: bool | None  # val_acc within the tolerance; None with overrides
    weights_equal: bool | None  # replayed weights equal the recorded model.pt; None when not comparable
    saved: Path | None  # the replay's own record folder (overrides only)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["saved"] = str(self.saved) if self.saved is not None else None
        return d


class ReplayNotSaved(StoreError):
    """A replay trained, but its record could not be saved (a full disk, a folder made read-only meanwhile).

    ``results`` holds the replays done so far, the unsaved one last (its ``saved`` None), so that a caller can still
    show what was trained; the trials after it are not replayed (their training could not be kept either).
    """

    def __init__(self, message: str, results: list[ReplayResult]) -> None:
        super().__init__(message)
        self.results = results


def replay_trials(
    results_dir: Path | str,
    trials: Sequence[int] = (),
    *,
    top: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
    threads: int | None = None,
    on_start: Callable[[int, str], None] | None = None,
) -> list[ReplayResult]:
    """Train trials ``trials`` (and the ``top`` best complete ones) again, each with its recorded seed.

    Every input is checked before any training: the folder, each record (complete, with a usable candidate), a
    kept ``model.pt`` (a plain state_dict, loaded with ``weights_only=True``), the overrides, the device and, with
    overrides, that ``replays/`` can be written; a problem is one AttnsearchError line and nothing is written. A
    save that fails after training all the same raises :class:`ReplayNotSaved`, which carries the results.
    ``threads`` overrides the thread count found in the record. ``on_start(trial, placements)`` is called before
    each training run.

    Example:
        >>> results = replay_trials("results/tiny", top=3, overrides={"epochs": 20})  # doctest: +SKIP
        >>> [str(r.saved) for r in results][0]  # doctest: +SKIP
        'results/tiny/replays/2-e20'
    """
    store = ResultsStore.open(results_dir)
    results = StudyResults.from_store(store)
    metric = results.objectives[0][0]
    numbers = list(dict.fromkeys(_number(n) for n in trials))
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise AttnsearchError(f"--top must be a positive integer, got {top!r}")
        numbers += [r.number for r in results.ranked()[:top] if r.number not in numbers]
    if not numbers and top is not None:
        raise AttnsearchError(f"{store.root}: the study has no complete trial to take the top {top} of")
    if not numbers:
        raise AttnsearchError("nothing to replay: name trials with --trial N or --top K")
    changes = _check_overrides(overrides or {})
    if changes:  # a new recipe is saved: a folder that cannot take it is refused before any training
        check_writable(store.root / "replays")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise AttnsearchError(f"--threads must be a positive integer, got {threads!r}")
    torch_device = resolve_device(device)

    jobs = []
    for number in numbers:
        record = store.read_finished(number)
        assert record.candidate is not None  # read_finished guarantees it
        kept = store.read_weights(number) if store.weights_path(number).exists() and not changes else None
        jobs.append(_Job(number, record, record.candidate, kept))
    # the threads the search used: the record's, else the space's execution.threads, else torch's default
    default_threads = results.space.config.execution.threads if results.space is not None else None
    datasets: dict[str, Dataset] = {}  # by repr: a record's values may be unhashable (a list where none belongs)
    for job in jobs:  # a data problem shows before any training
        if repr(job.candidate.data) not in datasets:
            datasets[repr(job.candidate.data)] = load_dataset(job.candidate.data).to(torch_device)

    results = []
    for i, job in enumerate(jobs):
        if on_start is not None:
            on_start(job.number, job.candidate.describe())
        run_threads = threads if threads is not None else (job.record.worker.threads or default_threads)
        dataset = datasets[repr(job.candidate.data)]
        result, unsaved = _replay(store, job, metric, changes, dataset, torch_device, run_threads)
        results.append(result)
        if unsaved is not None:
            left = [j.number for j in jobs[i + 1 :]]
            rest = f"; trial{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} not replayed" if left else ""
            raise ReplayNotSaved(f"trial {job.number}'s replay trained but is not saved: {unsaved}{rest}", results)
    return results


def replay_trial(results_dir: Path | str, trial: int, **options: Any) -> ReplayResult:
    """Train trial ``trial`` again; the options are :func:`replay_trials`'.

    Example:
        >>> result = replay_trial("results/tiny", 2, device="cpu")  # doctest: +SKIP
        >>> result.matches  # doctest: +SKIP
        True
    """
    return replay_trials(results_dir, [trial], **options)[0]


def ranking_agreement(results: Sequence[ReplayResult]) -> tuple[float | None, int]:
    """Spearman's correlation of the recorded and replayed scores, and how many pairs it is over.

    Trials without both scores are left out; with fewer than three pairs the correlation is None.

    Example:
        >>> ranking_agreement([])
        (None, 0)
    """
    pairs = [(r.recorded[r.metric], r.replayed[r.metric]) for r in results]
    kept = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(kept) < 3:
        return None, len(kept)
    return spearman([x for x, _ in kept], [y for _, y in kept]), len(kept)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long sequences; ties get their average rank.

    None when it is undefined: fewer than two values, or every value of one side equal.

    Example:
        >>> spearman([0.1, 0.5, 0.3], [10, 30, 20])
        1.0
        >>> spearman([1, 2, 2, 3], [4, 3, 2, 1])
        -0.9486832980505138
    """
    if len(a) != len(b):
        raise ValueError(f"spearman: sequences of different lengths ({len(a)} and {len(b)})")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    mean = (len(a) + 1) / 2  # the mean rank, ties or not
    cov = sum((x - mean) * (y - mean) for x, y in zip(ra, rb, strict=True))
    var_a = sum((x - mean) ** 2 for x in ra)
    var_b = sum((y - mean) ** 2 for y in rb)
    if var_a == 0 or var_b == 0:
        return None
    return cov / math.sqrt(var_a * var_b)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1  # ranks count from 1; a tie shares the mean of its positions
        start = end + 1
    return ranks


@dataclass(frozen=True)
class _Job:
    number: int
    record: TrialRecord
    candidate: Candidate
    kept: dict[str, torch.Tensor] | None  # the recorded weights, for a plain replay


def _replay(
    store: ResultsStore,
    job: _Job,
    metric: str,
    changes: dict[str, Any],
    dataset: Dataset,
    device: torch.device,
    threads: int | None,
) -> tuple[ReplayResult, StoreError | None]:
    """The replay's result, and the error that kept its new record from being saved (None when it was)."""
    trained = _with_overrides(job.candidate, changes)
    started = timestamp()
    # the last epoch alone is validated: its score is what a replay compares (validation changes no training)
    outcome = run_candidate(
        trained,
        dataset,
        device=device,
        repeats=len(job.record.repeats) or 1,
        threads=threads,
        keep_weights=True,
        first_val_epoch=trained.train.epochs,
    )
    keys = (*COMPARED, metric)
    recorded = {key: job.record.score(key) for key in keys}
    complete = outcome.state == "complete"
    replayed = {key: outcome.metrics.value(key) if complete else None for key in keys}
    tolerance = matches = weights_equal = saved = unsaved = None
    if changes:
        try:
            saved = _save(store, job.number, trained, changes, outcome, dataset, threads, started)
        except StoreError as err:
            unsaved = err
    else:
        recorded_on = job.record.worker.device or "cpu"
        tolerance = 0.0 if device.type == "cpu" and recorded_on == "cpu" else CUDA_TOLERANCE
        a, b = recorded["val_acc"], replayed["val_acc"]
        matches = a is not None and b is not None and abs(a - b) <= tolerance
        if job.kept is not None and outcome.state_dict is not None:
            weights = outcome.state_dict
            weights_equal = job.kept.keys() == weights.keys() and all(
                torch.equal(job.kept[k], weights[k]) for k in weights
            )
    result = ReplayResult(
        trial=job.number,
        placements=job.candidate.describe(),
        metric=metric,
        recorded=recorded,
        replayed=replayed,
        state=outcome.state,
        reason=outcome.reason,
        overrides=changes,
        device=str(device),
        threads=threads,
        tolerance=tolerance,
        matches=matches,
        weights_equal=weights_equal,
        saved=saved,
    )
    return result, unsaved


def _number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AttnsearchError(f"--trial must be a trial number, got {value!r:.40}")
    return value


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in OVERRIDES:
            raise AttnsearchError(f"unknown recipe override {name!r}; valid: {', '.join(OVERRIDES)}")
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "lr" and not (number and math.isfinite(value) and value > 0):
            raise AttnsearchError(f"--lr must be a positive number, got {value!r}")
        if name != "lr" and not (number and isinstance(value, int) and value >= 1):
            raise AttnsearchError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        checked[name] = float(value) if name == "lr" else value
    return checked


def _with_overrides(candidate: Candidate, changes: dict[str, Any]) -> Candidate:
    if not changes:
        return candidate
    recipe = replace(candidate.train, **changes)
    if "epochs" in changes:
        recipe = replace(recipe, steps=None)  # a step budget would overrule the epochs asked for
    return replace(candidate, train=recipe)


def _tag(changes: dict[str, Any]) -> str:
    return "-".join(f"{OVERRIDES[name]}{value:g}" for name, value in changes.items())


def _save(
    store: ResultsStore,
    number: int,
    candidate: Candidate,
    changes: dict[str, Any],
    outcome: TrialOutcome,
    dataset: Dataset,
    threads: int | None,
    started: str,
) -> Path:
    record = TrialRecord(
        number,
        candidate=candidate,
        **{**outcome.record_fields(), "classes": tuple(dataset.classes)},
        started=started,
        finished=timestamp(),
        versions=versions(),
        replay_of=number,
        overrides=changes,
        threads=threads,
    )
    return store.write_replay(f"{number}-{_tag(changes)}", record, outcome.state_dict)
