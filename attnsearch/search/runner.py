"""The ask/tell loop: the only code that talks to the Optuna study.

Ask a trial, turn it into a Candidate, hand it to the worker, tell the outcome, record it. Pruning decisions are
made here from the epoch scores the worker reports. Duplicate candidates reuse their recorded score. A run that
is started again continues the same study; a trial that was running when a process died is failed and retried.
Several runs can share one study (``--storage``, each with its own folder): what each keeps in the study's trials
and how they read it back is :mod:`attnsearch.search.shared`'s; how they share the work is :meth:`_Run.loop`'s.
The study itself (sampler, pruner, storage, judging an epoch) is :mod:`attnsearch.search.study`'s.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..candidate import Candidate
from ..device import resolve_device
from ..effective import changed_params
from ..plugins import plugin_specs
from ..record import TrialRecord, counts_towards_target, timestamp, versions
from ..results import StudyResults
from ..signals import Stopped, exit_code, interrupted_by, stop_signals
from ..space import SearchSpace
from .events import EpochEnded, Event, NewBest, Note, RunStarted, TrialEnded, TrialResumed, TrialStarted
from .executor import Executor, Job, LocalExecutor
from .settings import TrialSettings
from .shared import (
    ATTR,
    EPOCH_ATTR,
    Driver,
    asked,
    attrs,
    check_same_study,
    is_skipped,
    peek_trials,
    shown_url,
    store_outcome,
    trial_record,
)
from .journal import check_journal
from .store import FolderClaim, ResultsStore, StoreError
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

# ATTR: the user attribute holding our state of a trial (see attnsearch.search.shared)


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
    confirm: bool = True,
) -> RunResult:
    """Run (or continue) the study of ``space``; see ``attnsearch run --help`` for the options.

    ``executor`` runs the trials instead of the one the space names (the caller made it, holds its data and closes
    it): ``attnsearch bench overhead`` passes one that times each trial from outside. Once the search has reached
    its target, a space with ``search.confirm`` runs (or continues) its confirmation race
    (:mod:`attnsearch.search.confirm`), unless ``confirm`` is False or ``executor`` was given. Raises SpaceError or
    StoreError (one line, nothing written) for a space or folder that cannot be used (a folder whose trial records
    are not trials of the study in ``storage``, or in its journal without one, included), and :class:`RunInterrupted`
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

    # one run writes a folder at a time: a second one is refused before it reads or moves anything
    claim = FolderClaim(store.root)
    claim.take()
    try:
        if fresh:
            moved = store.move_aside()
            claim.release()  # the claim went with the old folder
            if moved:
                emit(Note(f"moved the previous results to {moved}"))
        elif store.space_path.exists() and _searched(store.read_space_source()) != _searched(space.source):
            raise StoreError(
                f"{store.root} holds a study of a different space; use --fresh to start over or change `name`"
            )
        previous = store.read_records()  # a record this version cannot read is refused before anything is written
        confirmed = store.read_confirm_records()  # the confirmation race's, likewise
        # the local executor loads the data here, before any folder exists: a data error writes nothing
        dataset = load_dataset(space.data_spec()) if local else None
        note = lambda text: emit(Note(text))  # noqa: E731 (what was done to the journal or Ray's folder on the way)
        if executor is None and execution.executor == "ray" and execution.address is None:
            from .ray_executor import ray_temp_dir

            ray_temp_dir()  # a Ray this run starts needs a short temp folder: none can be made is refused here
        # the folder's records go on with their own study only: another study's trials would be written over them
        _check_same_study(previous, store, storage, space.name)
        if storage:  # the user's storage is opened (its URL checked) before the folder is made
            study = open_study(space, store, storage, note=note)
            store.create(text)
            claim.take()
        else:  # the journal lives in the folder; a damaged one is refused before anything is written
            check_journal(store.journal_path)
            store.create(text)
            claim.take()
            study = open_study(space, store, note=note)
            if previous:  # the folder's journal, open now, holds the trials its records are of
                trials = study.get_trials(deepcopy=False)
                check_same_study(previous, trials, folder=store.root, source=str(store.journal_path), hint=_HINT)
        settings = TrialSettings(
            constraints=space.constraints(),
            repeats=search.repeats,
            threads=execution.threads,
            keep_weights=keep_weights > 0,
            first_val_epoch=space.first_val_epoch,
            plugins=tuple(plugin_specs()),  # a Ray worker loads them before its dataset and candidates
        )
        owned = executor is None
        if executor is None:
            executor = _make_executor(space, settings, dataset, torch_device, device, note)
        results_so_far = StudyResults.from_space(space, previous, target=target, confirm_records=confirmed)
        run = _Run(space, study, store, executor, results_so_far, shared=bool(storage))
        try:
            run.recover(emit)
            if design is not None and not study.user_attrs.get("enqueued"):
                _enqueue(study, design)
            ran = run.loop(timeout, keep_weights, emit)
        finally:
            if owned:
                executor.close()
        if owned and confirm and search.confirm is not None and run.results.done >= target:
            from .confirm import run_confirmation  # the race: its own executor, its own records

            race = run_confirmation(space, store, run.results, emit=emit, device=device, torch_device=torch_device)
            run.results = race
        summary = run.write_summary()
        return RunResult(space.name, store.root, run.results, summary, ran)
    finally:
        claim.release()


_HINT = "run it with the --storage its trials ran with, or with --fresh to move them aside and start over"


def _check_same_study(records: list[TrialRecord], store: ResultsStore, url: str | None, name: str) -> None:
    """Refuse (StoreError, one line) a folder whose records are not trials of the study about to be opened: the
    study at ``url``, looked at without creating it there (:func:`~attnsearch.search.shared.peek_trials`, which
    also makes the storage's tables, racing no other driver), or the folder's journal when it has none (one it has
    is checked once open). A folder run with one storage and then with another would otherwise get the other
    study's trials 0, 1, ... written over its own."""
    if url:
        trials = peek_trials(url, name)
        source = f"--storage {shown_url(url)}"
        if records and store.journal_path.exists():  # its trials ran with the folder's own journal
            hint = "run it without --storage (its trials ran with its journal), or give this run its own --results"
            check_same_study(records, trials, folder=store.root, source=source, hint=hint)
            return
    elif records and not store.journal_path.exists():
        trials, source = None, f"the journal {store.journal_path} (there is none)"
    else:
        return
    check_same_study(records, trials, folder=store.root, source=source, hint=_HINT)


def _enqueue(study: optuna.Study, design: list[dict[str, Any]]) -> None:
    """Enqueue the design's trials, each once, then mark the study as enqueued. A point already in the study
    (another driver enqueueing the same design at the same time) is not enqueued again; one that both enqueued at
    the same moment is told apart when asked (:meth:`_Run.copy_of`)."""
    known = {_frozen(t.system_attrs.get("fixed_params", t.params)) for t in study.get_trials(deepcopy=False)}
    for params in design:
        if _frozen(params) not in known:
            study.enqueue_trial(params)
    study.set_user_attr("enqueued", True)


def _frozen(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _make_executor(
    space: SearchSpace,
    settings: TrialSettings,
    dataset: Any,
    torch_device: Any,
    device: str | None,
    note: Callable[[str], None],
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
        note=note,
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
    # a duplicate skipped because another driver trains its candidate is no trial of the study's
    return (
        trial.state == TrialState.FAIL
        and counts_towards_target("failed", attrs(trial).get("reason"))
        and not is_skipped(trial)
    )


ASKING_S = 600.0  # a running trial that has not said what it trains after this long was left by a dead driver


def _asking(trial: optuna.trial.FrozenTrial) -> bool:
    """A running trial that does not say what it trains yet: asked a moment ago by another driver (True), or left
    so by one that died between asking and saying (False, once it is older than :data:`ASKING_S`)."""
    started = trial.datetime_start
    return started is None or (datetime.now() - started).total_seconds() < ASKING_S


class _View:
    """The study at one moment, as the loop needs it with other drivers on it (``--storage``): how many trials count
    towards the target, which run in other drivers and the candidates they train, and the finished trials whose
    outcome a duplicate reuses. ``mine``: the trials this run has in hand."""

    def __init__(self, trials: list[optuna.trial.FrozenTrial], mine: set[int]) -> None:
        self.trials = trials
        self.done = 0
        # number -> candidate key (None: asked a moment ago), of the trials other drivers run now
        self.elsewhere: dict[int, str | None] = {}
        self._finished: dict[str, optuna.trial.FrozenTrial] = {}  # key -> its first complete or infeasible trial
        for trial in trials:
            self.done += _done(trial)
            known = attrs(trial)
            key = known.get("key")
            if is_skipped(trial):
                continue
            if trial.state == TrialState.RUNNING and trial.number not in mine:
                if key is not None or _asking(trial):
                    self.elsewhere[trial.number] = key
            elif (
                key is not None
                and known.get("reused_from") is None
                and (
                    trial.state == TrialState.COMPLETE
                    or (trial.state == TrialState.FAIL and known.get("state") == "infeasible")
                )
            ):
                self._finished.setdefault(key, trial)

    def training(self, key: str) -> int | None:
        """The trial another driver is training candidate ``key`` in, if any."""
        return next((number for number, k in sorted(self.elsewhere.items()) if k == key), None)

    def finished(self, key: str) -> TrialRecord | None:
        """The record of a complete or infeasible trial of candidate ``key`` (any driver's), if any."""
        trial = self._finished.get(key)
        record = trial_record(trial) if trial is not None else None
        return record if record is not None and record.state in ("complete", "infeasible") else None

    def copy_of(self, number: int) -> int | None:
        """For trial ``number`` asked from the design's queue, an earlier trial of the same design point: two drivers
        that enqueued the design at the same moment put it there twice. None otherwise (retries are no copies)."""
        by_number = {t.number: t for t in self.trials}
        asked_trial = by_number.get(number)
        fixed = asked_trial.system_attrs.get("fixed_params") if asked_trial is not None else None
        if fixed is None or attrs(asked_trial).get("retry_of") is not None:
            return None
        return next(
            (
                t.number
                for t in self.trials
                if t.number < number
                and t.system_attrs.get("fixed_params") == fixed
                and attrs(t).get("retry_of") is None
            ),
            None,
        )


@dataclass
class _Running:
    trial: optuna.Trial
    record: TrialRecord  # its "running" record


class _Run:
    """One run's loop over the study: the only code that asks and tells. Every record it writes goes through
    :meth:`write`, which keeps :attr:`results` (what summary.json, the weights kept and the best event read)."""

    def __init__(
        self,
        space: SearchSpace,
        study: optuna.Study,
        store: ResultsStore,
        executor: Executor,
        results: StudyResults,
        *,
        shared: bool = False,
    ) -> None:
        self.space, self.study, self.store, self.executor, self.results = space, study, store, executor, results
        self.shared = shared  # a --storage study: other drivers may run trials of it at the same time
        self.driver = Driver.here(store.root)

    def write(self, record: TrialRecord) -> None:
        self.store.write_record(record)
        self.results = self.results.with_record(record)

    def write_summary(self) -> dict[str, Any]:
        summary = self.results.summary(kept=self.store.kept_weights())
        self.store.write_summary(summary)
        return summary

    def recover(self, emit: Callable[[Event], None]) -> None:
        """Trials left RUNNING by a process that died: failed as 'killed', their candidates queued again once.

        Every running trial in the folder's journal is a dead run's. In a shared study (``--storage``) one may be
        another driver's, alive: only those whose driver ran on this host and is gone, those of this folder
        (recorded here, or asked by a driver of this folder on another host), and those that never said what they
        train and are older than :data:`ASKING_S` are taken as dead; the rest are left to their drivers (each fails
        its own dead trials when it is started again). A dead trial of another folder is failed in the study and
        recorded in no folder.
        """
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            driver = Driver.of(trial)
            mine = trial.number in self.results.records or (driver is not None and driver.folder == self.driver.folder)
            if self.shared:
                if driver is not None and driver.host == self.driver.host:
                    dead = driver.gone()
                else:  # elsewhere only a driver of this folder; one that never said what it trains, once old
                    dead = mine or (not attrs(trial) and not _asking(trial))
                if not dead:
                    continue
            known_attrs = attrs(trial)
            known = self.results.records.get(trial.number)
            if known is None:
                found = known_attrs.get("candidate")
                candidate = Candidate.from_dict(found) if found else None
                known = TrialRecord(
                    trial.number, "running", candidate=candidate, params=trial.params, started=known_attrs.get("stamp")
                )
            record = replace(known, state="failed", reason="killed")
            store_outcome(self.study._storage, trial._trial_id, known_attrs, record)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            if mine or not self.shared:
                self.write(record)
            if known_attrs.get("retry_of") is None:
                self.study.enqueue_trial(trial.params, user_attrs={ATTR: {"retry_of": trial.number}})
                emit(TrialResumed(trial.number))

    def loop(self, timeout: float | None, keep_weights: int, emit: Callable[[Event], None]) -> int:
        """Ask while there is room, wait for outcomes, tell them; returns the trials this run finished.

        With other drivers on the study (``--storage``) the target counts their finished trials and those they run
        now, and a candidate is trained once: a duplicate of one that any driver finished (complete or infeasible)
        reuses its outcome, as in a study of one driver, and counts; a duplicate of one that another driver is
        training now is told failed at once as skipped (not trained, not counted, recorded in no folder) and
        another candidate is asked, after a wait for the other drivers' trials when this run has none of its own
        in flight. Skipping rather than waiting keeps this run's slots busy, and does not hang on a driver that
        died mid-trial. A design point that two drivers enqueued at the same moment is skipped in the same way, so
        that a grid still trains every point; so is a trial asked when those that the other drivers asked before it
        make up the target (of two drivers asking for the last trial at once, the first asked runs it). Each driver
        writes what a trial trains before it looks at the others', so of two that ask the same candidate at once at
        least one sees the other.
        """
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
            if value is None:  # not validated, so not in the trial's intermediate values: watch reads it here
                entry.trial.set_user_attr(EPOCH_ATTR, epoch)
            emit(EpochEnded(number, epoch, epochs, value, worker))
            return prune

        with _ctrl_c(stop, executor.stop) as caught:
            while True:
                timed_out = timeout is not None and time.monotonic() - begun > timeout
                blocked: set[int] = set()  # other drivers' trials a candidate asked here is trained in
                while not stop.is_set() and not timed_out and len(running) < executor.capacity:
                    view = _View(study.get_trials(deepcopy=False), set(running))
                    if view.done + len(view.elsewhere) + len(running) >= target:
                        break
                    trial = study.ask()
                    candidate = self.space.suggest(trial)
                    key = candidate.key()
                    retry_of = attrs(trial).get("retry_of")
                    started = timestamp()
                    trial.set_user_attr(ATTR, asked(candidate, retry_of=retry_of, started=started, driver=self.driver))
                    # what the other drivers did, read after this trial says what it trains
                    view = _View(study.get_trials(deepcopy=False), {*running, trial.number})
                    earlier = [n for n in view.elsewhere if n < trial.number]
                    if view.done + len(earlier) + len(running) >= target:  # they asked first: the target is theirs
                        last = max(earlier, default=max((t.number for t in view.trials if _done(t)), default=0))
                        self.skip(trial, last, "the other drivers' trials reach n_trials", emit)
                        continue
                    copy_of = view.copy_of(trial.number)
                    if copy_of is not None:
                        self.skip(trial, copy_of, f"trial {copy_of} has its design point (enqueued twice)", emit)
                        continue
                    if changed := changed_params(self.space, candidate, trial.params):  # as the modules use them
                        emit(Note(f"trial {trial.number} runs {'; '.join(changed)}: the same module at that slot"))
                    original = cache.get(key) or view.finished(key)
                    if original is not None:
                        self.reuse(trial, original, retry_of, emit)
                        ran += 1
                        continue
                    other = view.training(key)
                    if other is not None:
                        self.skip(trial, other, f"trial {other} trains the same candidate in another driver", emit)
                        blocked = set(view.elsewhere)
                        break
                    record = TrialRecord(
                        trial.number,
                        "running",
                        candidate=candidate,
                        params=trial.params,
                        retry_of=retry_of,
                        started=started,
                        worker=executor.worker,  # host and pid, when known: `watch` tells a dead run's trial by it
                    )
                    self.write(record)
                    emit(TrialStarted(record, executor.worker))
                    executor.submit(Job(trial.number, candidate))
                    running[trial.number] = _Running(trial, record)
                if timed_out and not running:
                    emit(Note(f"timeout of {timeout:g} s reached"))
                if not running and blocked and not timed_out and not stop.is_set():
                    self._wait_for_others(blocked, stop, None if timeout is None else begun + timeout)
                    continue
                if not running:
                    break
                for job, outcome in executor.wait(on_report):
                    entry = running.pop(job.number)
                    self.tell(entry, outcome, keep_weights, emit)
                    written = self.results.records[job.number]
                    if written.state in ("complete", "infeasible"):
                        cache[job.candidate.key()] = written
                    if outcome.reason in ("interrupted", "worker_lost") and entry.record.retry_of is None:
                        # not the candidate's fault: it is tried again, once
                        study.enqueue_trial(entry.trial.params, user_attrs={ATTR: {"retry_of": job.number}})
                    if outcome.reason == "interrupted":
                        interrupted = job.number
                    ran += 1
                if stop.is_set() and not running:
                    break
        others = sorted(_View(study.get_trials(deepcopy=False), set()).elsewhere)
        if others and not stop.is_set():
            listed = ", ".join(map(str, others[:8])) + (", ..." if len(others) > 8 else "")
            emit(Note(f"trials {listed} run in other drivers on this study; n_trials counts them"))
        if interrupted is not None or stop.is_set():
            self.write_summary()
            which = f"trial {interrupted} recorded as failed (interrupted)" if interrupted is not None else "stopped"
            raise RunInterrupted(f"{interrupted_by(caught.signum)}: {which}", caught.signum)
        return ran

    def _reuse_cache(self) -> dict[str, TrialRecord]:
        """Candidate key -> the record whose outcome a duplicate reuses (this folder's complete or infeasible trials;
        other drivers' are looked up in the study when asked)."""
        cache: dict[str, TrialRecord] = {}
        for record in self.results.finished():
            if (
                record.candidate is not None
                and record.reused_from is None
                and record.state in ("complete", "infeasible")
            ):
                cache.setdefault(record.candidate.key(), record)
        return cache

    def _wait_for_others(self, numbers: set[int], stop: threading.Event, deadline: float | None) -> None:
        """Wait until one of the trials ``numbers`` that other drivers train has ended (the study is read every
        second), for a minute at most, until the stop signal or the run's ``deadline`` (monotonic seconds)."""
        until = time.monotonic() + 60.0
        while not stop.wait(1.0):
            now = time.monotonic()
            if now > until or (deadline is not None and now > deadline):
                return
            if not numbers <= {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}:
                return

    def skip(self, trial: optuna.Trial, other: int, why: str, emit: Callable[[Event], None]) -> None:
        """Tell ``trial`` failed without training it: a duplicate of the candidate (or design point) of trial
        ``other``, which another driver trains or has. It counts towards no target and no folder records it."""
        trial.set_user_attr(ATTR, {**attrs(trial), "state": "failed", "reason": why, "skipped_for": other})
        self.study.tell(trial, state=TrialState.FAIL)
        emit(Note(f"trial {trial.number} not trained: {why}"))

    def reuse(
        self, trial: optuna.Trial, original: TrialRecord, retry_of: int | None, emit: Callable[[Event], None]
    ) -> None:
        """Record ``trial`` as a duplicate of ``original`` (a trial of this folder's or of another driver's): its
        outcome, this trial's own identity."""
        record = original.reuse(trial.number, trial.params, retry_of=retry_of, finished=timestamp())
        store_outcome(self.study._storage, trial._trial_id, attrs(trial), record, reused_from=original.number)
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
        record = replace(entry.record, **outcome.record_fields(), finished=timestamp(), versions=versions())
        values = self.results.values(record)
        if record.state == "complete" and values is None:
            record = replace(record, state="failed", reason="no score: the run produced no validation result")
        best = self.results.best()
        store_outcome(self.study._storage, trial._trial_id, attrs(trial), record)  # every driver sees it
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


def _searched(source: Any) -> Any:
    """A space file's YAML without ``search.confirm``: a race added, changed or removed after a search is the same
    study (the race reads its settings from the space file the run writes)."""
    if not isinstance(source, dict) or not isinstance(source.get("search"), dict):
        return source
    return {**source, "search": {k: v for k, v in source["search"].items() if k != "confirm"}}


def _dump_space(space: SearchSpace) -> bytes:
    import yaml

    return yaml.safe_dump(space.source, sort_keys=False).encode()
