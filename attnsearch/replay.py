"""Replay a trial: rebuild its candidate and recipe from ``trial.json`` alone and train it again.

Without overrides a replay checks a record: on the CPU the trainer is deterministic, so the replay must reproduce
the recorded validation accuracy exactly (and the recorded weights bit for bit, where ``model.pt`` was kept). That
holds for the same torch thread count only: intra-op threads split the reductions of the backward passes
differently, so weights drift in the last bits and an accuracy can move. A replay therefore uses the thread count
the search used: the record's ``worker.threads`` where it has one, else the study's ``execution.threads`` from its
``space.yaml``, else torch's default (all cores, as a search with no ``threads`` setting ran). On CUDA, kernels with
atomic adds are not bit-reproducible, and a replay within :data:`CUDA_TOLERANCE` counts as reproduced.

With overrides (the recipe's ``epochs``, ``batch_size``, ``lr``; the data's ``train_size``, ``val_size``, where
``"all"`` is the whole split: :mod:`attnsearch.replay_budget`) a replay is "now train it properly", at another
budget than the search's: its validation score is not comparable with the record's and is not checked against it.
The result is a new record under ``RESULTS_DIR/replays/<n>-<tag>/`` (``trial.json`` with ``replay_of`` and
``overrides``, and ``model.pt``), written atomically; the trial's own folder is never touched.

With ``test=True`` the trained model (the first seed's) is also scored once on the dataset's test split, after
training and apart from every validation figure: ``test_acc`` and ``test_images``, kept in the replay's record
(never the trial's). A dataset without a test split is refused before any training. The test score is for
reporting a candidate chosen on validation scores: choosing among replays by it would select on the test set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .candidate import Candidate
from .data import Dataset, load_dataset
from .device import resolve_device
from .errors import AttnsearchError
from .plugin_records import load_for_trials
from .record import TrialRecord, timestamp, versions
from .replay_budget import (
    OVERRIDES,
    apply_overrides,
    changes_value,
    check_overrides,
    folder_tag,
    recorded_overrides,
    searched_values,
)
from .results import StudyResults
from .search.store import ResultsStore, StoreError, check_writable
from .search.worker import TrialOutcome, run_candidate
from .stats import kendall, spearman, wilson_interval

__all__ = [
    "CUDA_TOLERANCE",
    "OVERRIDES",
    "ReplayNotSaved",
    "ReplayResult",
    "ranking_agreement",
    "replay_trial",
    "replay_trials",
]

CUDA_TOLERANCE = 0.01  # val_acc, 0..1: one percentage point
COMPARED = ("val_acc", "val_top5", "val_loss", "train_loss")


@dataclass(frozen=True)
class ReplayResult:
    """One trial trained again, next to its record.

    Accuracies are fractions 0..1. ``test_acc`` is None unless the replay was asked to score the test split; it
    is never one of ``recorded`` / ``replayed`` (validation figures only).

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
    overrides: dict[str, Any]  # fields changed, as asked ("all" for a whole split); empty for a plain replay
    device: str
    threads: int | None  # torch threads of the replay (None: torch's default)
    tolerance: float | None  # allowed |val_acc difference|; None when overrides make it a different run
    matches: bool | None  # val_acc within the tolerance; None with overrides
    weights_equal: bool | None  # replayed weights equal the recorded model.pt; None when not comparable
    saved: Path | None  # the replay's own record folder (overrides only)
    searched: dict[str, Any] = field(default_factory=dict)  # the search's value of each overridden field
    recorded_images: int | None = None  # validation images of the recorded val_acc
    replayed_images: int | None = None  # validation images of the replayed val_acc
    test_acc: float | None = None  # top-1 on the test split (first seed), when asked for
    test_images: int | None = None

    def interval(self, which: str) -> tuple[float, float] | None:
        """The Wilson 95% interval (:func:`attnsearch.stats.wilson_interval`) of the ``"recorded"`` or
        ``"replayed"`` val_acc, or of the ``"test"`` accuracy, from the number of images it was measured on; None
        when the score or its count is unknown. With repeats, a val_acc is a mean over seeds and the interval
        holds the images' noise alone.

        Example:
            >>> r = ReplayResult(0, "", "val_acc", {}, {}, "complete", None, {}, "cpu", 1, None, None, None, None,
            ...                  test_acc=0.912, test_images=10000)
            >>> [round(x, 4) for x in r.interval("test")], r.interval("recorded")
            ([0.9063, 0.9174], None)
        """
        if which == "test":
            value, n = self.test_acc, self.test_images
        elif which in ("recorded", "replayed"):
            value = (self.recorded if which == "recorded" else self.replayed).get("val_acc")
            n = self.recorded_images if which == "recorded" else self.replayed_images
        else:
            raise ValueError(f"interval of 'recorded', 'replayed' or 'test', not {which!r}")
        if value is None or not n or not 0.0 <= value <= 1.0:
            return None
        return wilson_interval(round(value * n), n)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["saved"] = str(self.saved) if self.saved is not None else None
        d["intervals"] = {k: self.interval(k) for k in ("recorded", "replayed", "test")}  # Wilson 95%
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
    test: bool = False,
    device: str = "auto",
    threads: int | None = None,
    on_start: Callable[[int, str], None] | None = None,
    on_epoch: Callable[[int, int, int, float | None], None] | None = None,
) -> list[ReplayResult]:
    """Train trials ``trials`` (and the ``top`` best complete ones) again, each with its recorded seed.

    ``overrides``: field -> value for :func:`attnsearch.replay_budget.check_overrides` (``epochs``,
    ``batch_size``, ``lr``, ``train_size``, ``val_size``; a split size may be ``"all"``; None values are not
    changes). ``test``: also score each trained model once on the test split (:class:`ReplayResult` ``test_acc``).

    Every input is checked before any training: the folder, each record (complete, with a usable candidate), a
    kept ``model.pt`` (a plain state_dict, loaded with ``weights_only=True``), the overrides, the device, the data
    (and with ``test`` that the dataset has a test split) and, with overrides, that ``replays/`` can be written; a
    problem is one AttnsearchError line and nothing is written. A save that fails after training all the same
    raises :class:`ReplayNotSaved`, which carries the results. ``threads`` overrides the thread count found in the
    record. ``on_start(trial, placements)`` is called before each training run, ``on_epoch(trial, epoch, epochs,
    val_acc)`` after each epoch of its first seed (``val_acc`` None where the epoch is not validated).

    Example:
        >>> results = replay_trials("results/tiny", top=1, overrides={"epochs": 20, "train_size": "all"},
        ...                         test=True)  # doctest: +SKIP
        >>> str(results[0].saved), results[0].test_images  # doctest: +SKIP
        ('results/tiny/replays/2-e20-trainall', 2000)
    """
    store = ResultsStore.open(results_dir)
    load_for_trials(store, trials, every=top is not None)  # the plug-ins they were trained with, warned if changed
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
    changes = check_overrides(overrides or {})
    records = {number: store.read_finished(number) for number in numbers}
    # an override equal to what every named trial was searched with changes nothing: a plain replay, checked
    changes = {k: v for k, v in changes.items() if any(changes_value(r.candidate, k, v) for r in records.values())}
    if changes:  # a new recipe is saved: a folder that cannot take it is refused before any training
        check_writable(store.root / "replays")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise AttnsearchError(f"--threads must be a positive integer, got {threads!r}")
    torch_device = resolve_device(device)

    jobs = []
    for number, record in records.items():
        assert record.candidate is not None  # read_finished guarantees it
        kept = store.read_weights(number) if store.weights_path(number).exists() and not changes else None
        jobs.append(_Job(number, record, apply_overrides(record.candidate, changes), kept))
    # the threads the search used: the record's, else the space's execution.threads, else torch's default
    default_threads = results.space.config.execution.threads if results.space is not None else None
    datasets: dict[str, Dataset] = {}  # by repr: a record's values may be unhashable (a list where none belongs)
    for job in jobs:  # a data problem (a missing test split included) shows before any training
        if repr(job.trained.data) not in datasets:
            datasets[repr(job.trained.data)] = _load(job.trained, test).to(torch_device)

    results = []
    for i, job in enumerate(jobs):
        if on_start is not None:
            on_start(job.number, job.trained.describe())
        run_threads = threads if threads is not None else (job.record.worker.threads or default_threads)
        dataset = datasets[repr(job.trained.data)]
        progress = None if on_epoch is None else _progress(on_epoch, job.number, job.trained.train.epochs)
        result, unsaved = _replay(store, job, metric, changes, dataset, torch_device, run_threads, test, progress)
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


def ranking_agreement(results: Sequence[ReplayResult], method: str = "spearman") -> tuple[float | None, int]:
    """The rank correlation of the recorded and replayed scores, and how many pairs it is over: Spearman's rho
    (``method="spearman"``) or Kendall's tau-b (``"kendall"``), both from ``scipy.stats``
    (:mod:`attnsearch.stats`); ties get their average rank.

    Trials without both scores are left out; with fewer than three pairs, or every score of one side equal, the
    correlation is None.

    Example:
        >>> ranking_agreement([])
        (None, 0)
    """
    correlation = {"spearman": spearman, "kendall": kendall}.get(method)
    if correlation is None:
        raise ValueError(f"method must be 'spearman' or 'kendall', not {method!r}")
    pairs = [(r.recorded[r.metric], r.replayed[r.metric]) for r in results]
    kept = [(x, y) for x, y in pairs if x is not None and y is not None]
    if len(kept) < 3:
        return None, len(kept)
    xs, ys = [x for x, _ in kept], [y for _, y in kept]
    if len(set(xs)) < 2 or len(set(ys)) < 2:  # undefined: no ranking on one side (scipy would warn and give NaN)
        return None, len(kept)
    return correlation(xs, ys), len(kept)


@dataclass(frozen=True)
class _Job:
    number: int
    record: TrialRecord
    trained: Candidate  # the record's candidate with the overrides applied
    kept: dict[str, torch.Tensor] | None  # the recorded weights, for a plain replay


def _load(candidate: Candidate, test: bool) -> Dataset:
    try:
        return load_dataset(candidate.data, test=test)
    except AttnsearchError as err:
        if test and "no test split" in str(err):
            raise AttnsearchError(f"--test: {err}; replay without --test to train it") from None
        raise


def _progress(on_epoch: Callable[[int, int, int, float | None], None], number: int, epochs: int) -> Callable:
    def report(epoch: int, value: float | None) -> bool:
        on_epoch(number, epoch, epochs, value)
        return False  # a replay is never pruned

    return report


def _replay(
    store: ResultsStore,
    job: _Job,
    metric: str,
    changes: dict[str, Any],
    dataset: Dataset,
    device: torch.device,
    threads: int | None,
    test: bool,
    report: Callable[[int, float | None], bool] | None = None,
) -> tuple[ReplayResult, StoreError | None]:
    """The replay's result, and the error that kept its new record from being saved (None when it was)."""
    started = timestamp()
    # the last epoch alone is validated: its score is what a replay compares (validation changes no training)
    outcome = run_candidate(
        job.trained,
        dataset,
        device=device,
        repeats=len(job.record.repeats) or 1,
        threads=threads,
        keep_weights=True,
        first_val_epoch=job.trained.train.epochs,
        score_test=test,
        report=report,
    )
    keys = (*COMPARED, metric)
    recorded = {key: job.record.score(key) for key in keys}
    complete = outcome.state == "complete"
    replayed = {key: outcome.metrics.value(key) if complete else None for key in keys}
    tolerance = matches = weights_equal = saved = unsaved = None
    if changes:
        try:
            saved = _save(store, job.number, job.trained, changes, outcome, dataset, threads, started)
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
    assert job.record.candidate is not None  # read_finished guarantees it
    result = ReplayResult(
        trial=job.number,
        placements=job.trained.describe(),
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
        searched=searched_values(job.record.candidate, changes),
        recorded_images=job.record.metrics.val_images,
        replayed_images=outcome.metrics.val_images if complete else None,
        test_acc=outcome.test_acc if complete else None,
        test_images=outcome.test_images if complete else None,
    )
    return result, unsaved


def _number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AttnsearchError(f"--trial must be a trial number, got {value!r:.40}")
    return value


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
        overrides=recorded_overrides(changes, dataset.split),
        threads=threads,
    )
    return store.write_replay(f"{number}-{folder_tag(changes)}", record, outcome.state_dict)
