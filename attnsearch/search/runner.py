"""The ask/tell loop: the only code that talks to the Optuna study.

Ask a trial, turn it into a Candidate, hand it to the worker, tell the outcome, record it. Pruning decisions are
made here from the epoch scores the worker reports. Duplicate candidates reuse their recorded score. A run that
is started again continues the same study; a trial that was running when a process died is failed and retried.
The study itself (sampler, pruner, storage, judging an epoch) is :mod:`attnsearch.search.study`'s.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..candidate import Candidate
from ..device import resolve_device
from ..record import TrialRecord, counts_towards_target, timestamp, versions
from ..results import StudyResults
from ..signals import Stopped, exit_code, interrupted_by, stop_signals
from ..space import SearchSpace
from .events import EpochEnded, Event, NewBest, Note, RunStarted, TrialEnded, TrialResumed, TrialStarted
from .executor import Executor, Job, LocalExecutor
from .settings import TrialSettings
from .journal import check_journal
from .store import ResultsStore, StoreError
from .study import judge_epoch, make_pruner, make_sampler, open_study
from .worker import TrialOutcome

__all__ = [
    "ATTR",
    "RunInterrupted",
    "RunResult",
    "judge_epoch",
    "make_pruner",
    "make_sampler",
    "open_study",
    "run_search",
]

ATTR = "attnsearch"  # user attribute holding our state of a trial


class RunInterrupted(Exception):
    """Ctrl-C or another stop signal (:mod:`attnsearch.signals`): the running trials were recorded as failed
    (interrupted) and the summary written; nothing finished was lost. ``signum`` is the signal that stopped the
    run, ``exit_code`` the command line's (128 + it: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


@dataclass
class RunResult:
    study_name: str
    folder: Path
    results: StudyResults  # the study's trials in this folder, the ones before this run included
    summary: dict[str, Any]  # what summary.json holds
    ran: int  # trials this run finished


# ------------------------------------------------------------------------------------------------ the run


def run_search(
    space: SearchSpace,
    *,
    results: Path | str = "results",
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    fresh: bool = False,
    keep_weights: int = 0,
    force: bool = False,
    space_text: bytes | None = None,
    on_event: Callable[[Event], None] | None = None,
    executor: Executor | None = None,
) -> RunResult:
    """Run (or continue) the study of ``space``; see ``attnsearch run --help`` for the options.

    ``executor`` runs the trials instead of the one the space names (the caller made it, holds its data and closes
    it): ``attnsearch bench overhead`` passes one that times each trial from outside. Raises SpaceError or
    StoreError (one line, nothing written) for a space or folder that cannot be used, and :class:`RunInterrupted`
    after Ctrl-C or another stop signal (SIGTERM, SIGHUP, ...: see :mod:`attnsearch.signals`), once the running
    trial and the summary are recorded; a second signal raises :class:`attnsearch.signals.Stopped` at once.

    Example:
        >>> from attnsearch import load_space
        >>> outcome = run_search(load_space("search_spaces/quickstart.yaml"), n_trials=2)  # doctest: +SKIP
        >>> outcome.results.best().label  # doctest: +SKIP
        'block3=se(reduction=8) block5=linear_attention'
    """
    from ..data import load_dataset

    emit = on_event or (lambda event: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own events say what happens
    search, execution = space.config.search, space.config.execution
    store = ResultsStore(Path(results) / space.name)
    text = space_text if space_text is not None else _dump_space(space)
    design = space.design(force=force)
    target = space.target(n_trials)
    local = executor is None and execution.executor == "local"
    # a local run checks its device here, before any folder exists (Ray workers check their own)
    torch_device = resolve_device(device or execution.device) if local else None

    if fresh:
        moved = store.move_aside()
        if moved:
            emit(Note(f"moved the previous results to {moved}"))
    elif store.space_path.exists() and store.read_space_source() != space.source:
        raise StoreError(f"{store.root} holds a study of a different space; use --fresh to start over or change `name`")
    previous = store.read_records()  # a record this version cannot read is refused before anything is written
    # the local executor loads the data here, before any folder exists: a data error writes nothing
    dataset = load_dataset(space.data_spec()) if local else None
    note = lambda text: emit(Note(text))  # noqa: E731 (what was done to the journal on the way)
    if storage:  # the user's storage is opened (its URL checked) before the folder is made
        study = open_study(space, store, storage, note=note)
        store.create(text)
    else:  # the journal lives in the folder; a damaged one is refused before anything is written
        check_journal(store.journal_path)
        store.create(text)
        study = open_study(space, store, note=note)
    settings = TrialSettings(
        constraints=space.constraints(),
        repeats=search.repeats,
        threads=execution.threads,
        keep_weights=keep_weights > 0,
        first_val_epoch=space.first_val_epoch,
    )
    owned = executor is None
    if executor is None:
        executor = _make_executor(space, settings, dataset, torch_device, device)
    run = _Run(space, study, store, executor, StudyResults.from_space(space, previous, target=target))
    try:
        run.recover(emit)
        if design is not None and not study.user_attrs.get("enqueued"):
            for params in design:
                study.enqueue_trial(params)
            study.set_user_attr("enqueued", True)
        ran = run.loop(timeout, keep_weights, emit)
    finally:
        if owned:
            executor.close()
    summary = run.write_summary()
    return RunResult(space.name, store.root, run.results, summary, ran)


def _make_executor(
    space: SearchSpace, settings: TrialSettings, dataset: Any, torch_device: Any, device: str | None
) -> Executor:
    execution = space.config.execution
    if execution.executor == "local":
        return LocalExecutor(dataset, torch_device, settings)
    from .ray_executor import RayExecutor

    return RayExecutor(
        space.data_spec(),
        settings,
        device=device or execution.device,
        address=execution.address,
        cpus_per_trial=execution.cpus_per_trial,
        gpus_per_trial=execution.gpus_per_trial,
        max_concurrent=execution.max_concurrent,
    )


@dataclass
class _Caught:
    signum: int = signal.SIGINT  # the first stop signal


@contextmanager
def _ctrl_c(stop: threading.Event, on_stop: Callable[[], None]) -> Iterator[_Caught]:
    """The first stop signal (Ctrl-C, SIGTERM, SIGHUP, ...: :func:`attnsearch.signals.stop_signals`) asks the
    running trials to stop at their next step, whichever executor runs them (``on_stop``: its ``stop``); a second
    one interrupts at once with :class:`attnsearch.signals.Stopped`. Yields which signal came first."""
    caught = _Caught()

    def handle(signum: int) -> None:
        if stop.is_set():
            raise Stopped(signum)
        caught.signum = signum
        stop.set()
        on_stop()

    with stop_signals(handle):
        yield caught


def _done(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether an Optuna trial counts towards the target, by the records' rule (``counts_towards_target``)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and counts_towards_target(
        "failed", trial.user_attrs.get(ATTR, {}).get("reason")
    )


@dataclass
class _Running:
    trial: optuna.Trial
    record: TrialRecord  # its "running" record


class _Run:
    """One run's loop over the study: the only code that asks and tells. Every record it writes goes through
    :meth:`write`, which keeps :attr:`results` (what summary.json, the weights kept and the best event read)."""

    def __init__(
        self, space: SearchSpace, study: optuna.Study, store: ResultsStore, executor: Executor, results: StudyResults
    ) -> None:
        self.space, self.study, self.store, self.executor, self.results = space, study, store, executor, results

    def write(self, record: TrialRecord) -> None:
        self.store.write_record(record)
        self.results = self.results.with_record(record)

    def write_summary(self) -> dict[str, Any]:
        summary = self.results.summary(kept=self.store.kept_weights())
        self.store.write_summary(summary)
        return summary

    def recover(self, emit: Callable[[Event], None]) -> None:
        """Trials left RUNNING by a process that died: failed as 'killed', their candidates queued again once."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = dict(trial.user_attrs.get(ATTR, {}))
            self.study._storage.set_trial_user_attr(
                trial._trial_id, ATTR, {**attrs, "state": "failed", "reason": "killed"}
            )
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            known = self.results.records.get(trial.number)
            if known is None:
                candidate = Candidate.from_dict(attrs["candidate"]) if attrs.get("candidate") else None
                known = TrialRecord(trial.number, "running", candidate=candidate, params=trial.params)
            self.write(replace(known, state="failed", reason="killed"))
            if attrs.get("retry_of") is None:
                self.study.enqueue_trial(trial.params, user_attrs={ATTR: {"retry_of": trial.number}})
                emit(TrialResumed(trial.number))

    def loop(self, timeout: float | None, keep_weights: int, emit: Callable[[Event], None]) -> int:
        """Ask while there is room, wait for outcomes, tell them; returns the trials this run finished."""
        study, executor, target = self.study, self.executor, self.results.target
        already = sum(_done(t) for t in study.get_trials(deepcopy=False))
        emit(
            RunStarted(self.space, target, already, self.store.root, executor.capacity, tuple(self.results.finished()))
        )
        stop = threading.Event()
        begun = time.monotonic()
        cache = self._reuse_cache()
        running: dict[int, _Running] = {}
        ran = 0
        interrupted: int | None = None

        def on_report(number: int, epoch: int, value: float | None, worker: Any) -> bool:
            entry = running[number]
            assert entry.record.candidate is not None
            epochs = entry.record.candidate.train.epochs
            prune = judge_epoch(entry.trial, epoch, value, single_objective=len(self.space.directions) == 1)
            emit(EpochEnded(number, epoch, epochs, value, worker))
            return prune

        with _ctrl_c(stop, executor.stop) as caught:
            while True:
                finished = sum(_done(t) for t in study.get_trials(deepcopy=False))
                timed_out = timeout is not None and time.monotonic() - begun > timeout
                while (
                    not stop.is_set()
                    and not timed_out
                    and len(running) < executor.capacity
                    and finished + len(running) < target
                ):
                    trial = study.ask()
                    candidate = self.space.suggest(trial)
                    key = candidate.key()
                    retry_of = trial.user_attrs.get(ATTR, {}).get("retry_of")
                    trial.set_user_attr(ATTR, {"candidate": candidate.to_dict(), "key": key, "retry_of": retry_of})
                    if key in cache:
                        self.reuse(trial, cache[key], retry_of, emit)
                        finished += 1
                        ran += 1
                        continue
                    record = TrialRecord(
                        trial.number,
                        "running",
                        candidate=candidate,
                        params=trial.params,
                        retry_of=retry_of,
                        started=timestamp(),
                        worker=executor.worker,  # host and pid, when known: `watch` tells a dead run's trial by it
                    )
                    self.write(record)
                    emit(TrialStarted(record, executor.worker))
                    executor.submit(Job(trial.number, candidate))
                    running[trial.number] = _Running(trial, record)
                if timed_out and not running:
                    emit(Note(f"timeout of {timeout:g} s reached"))
                if not running:
                    break
                for job, outcome in executor.wait(on_report):
                    entry = running.pop(job.number)
                    self.tell(entry, outcome, keep_weights, emit)
                    if outcome.state in ("complete", "infeasible"):
                        cache[job.candidate.key()] = job.number
                    if outcome.reason in ("interrupted", "worker_lost") and entry.record.retry_of is None:
                        # not the candidate's fault: it is tried again, once
                        study.enqueue_trial(entry.trial.params, user_attrs={ATTR: {"retry_of": job.number}})
                    if outcome.reason == "interrupted":
                        interrupted = job.number
                    ran += 1
                if stop.is_set() and not running:
                    break
        if interrupted is not None or stop.is_set():
            self.write_summary()
            which = f"trial {interrupted} recorded as failed (interrupted)" if interrupted is not None else "stopped"
            raise RunInterrupted(f"{interrupted_by(caught.signum)}: {which}", caught.signum)
        return ran

    def _reuse_cache(self) -> dict[str, int]:
        """Candidate key -> the trial whose recorded outcome a duplicate reuses (complete or infeasible trials)."""
        cache: dict[str, int] = {}
        for record in self.results.finished():
            if (
                record.candidate is not None
                and record.reused_from is None
                and record.state in ("complete", "infeasible")
            ):
                cache.setdefault(record.candidate.key(), record.number)
        return cache

    def reuse(self, trial: optuna.Trial, source: int, retry_of: int | None, emit: Callable[[Event], None]) -> None:
        """Record ``trial`` as a duplicate of trial ``source``: its outcome, this trial's own identity."""
        original = self.results.records[source]
        trial.set_user_attr(
            ATTR,
            {
                **trial.user_attrs.get(ATTR, {}),
                "reused_from": source,
                "state": original.state,
                "reason": original.reason,
            },
        )
        record = original.reuse(trial.number, trial.params, retry_of=retry_of, finished=timestamp())
        self.write(record)
        values = self.results.values(original)
        if values is not None:
            self.study.tell(trial, list(values))
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        emit(TrialEnded(record))

    def tell(self, entry: _Running, outcome: TrialOutcome, keep_weights: int, emit: Callable[[Event], None]) -> None:
        """Tell Optuna how a trial ended, write its final record, keep its weights if it ranks in the top K."""
        trial = entry.trial
        attrs = {**trial.user_attrs.get(ATTR, {}), "state": outcome.state, "reason": outcome.reason}
        trial.set_user_attr(ATTR, {**attrs, "metrics": outcome.metrics.to_dict()})
        record = replace(entry.record, **outcome.record_fields(), finished=timestamp(), versions=versions())
        values = self.results.values(record)
        if record.state == "complete" and values is None:
            record = replace(record, state="failed", reason="no score: the run produced no validation result")
        best = self.results.best()
        if record.state == "complete":
            self.study.tell(trial, list(values or ()))
        elif record.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self.write(record)
        if record.state == "complete" and keep_weights > 0 and outcome.state_dict is not None:
            self._keep_top_weights(record.number, outcome.state_dict, keep_weights)
        emit(TrialEnded(record))
        score = self.results.score(record)
        single = len(self.space.directions) == 1
        if (
            score is not None
            and single
            and (best is None or self.results.better(score, self.results.score(best) or 0.0))
        ):
            emit(NewBest(record))

    def _keep_top_weights(self, number: int, state_dict: dict[str, Any], k: int) -> None:
        ranked = self.results.ranked()
        if number in {r.number for r in ranked[:k]}:
            self.store.write_weights(number, state_dict)
        for record in ranked[k:]:
            self.store.delete_weights(record.number)


def _dump_space(space: SearchSpace) -> bytes:
    import yaml

    return yaml.safe_dump(space.source, sort_keys=False).encode()
