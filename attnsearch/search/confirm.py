"""The confirmation race: after the search, its best candidates and the baseline trained again over shared seeds.

A search ranks candidates by one brief training each, and one score carries the noise of its seed and of its
validation images: the leaderboard's top is not evidence that a placement helps. With ``search.confirm`` set, a run
whose search reached its target goes on with a race:

- **who races**: the ``top`` best distinct candidates of the search's ranking (:meth:`StudyResults.ranked`,
  distinct by :meth:`Candidate.key`, the seed aside) and the **baseline**, the best one's backbone, recipe and data
  with nothing placed (once, also when it is among the top);
- **how**: in round ``r`` every contender still in trains again with seed ``s_r`` (derived from the space's name
  and ``r``, never a seed the search used: :func:`~attnsearch.entrants.confirm_seeds`), the same for all, so data
  order and augmentation are the same; the layers a candidate shares with its bare backbone start from that
  backbone's initialisation at ``s_r`` (:func:`attnsearch.search.worker.share_backbone`), and the inserted modules
  from ``s_r`` as well. The budget is the search's unless ``epochs`` or ``train_size`` say otherwise; no pruning,
  no constraints;
- **the rule** after each round (:mod:`attnsearch.confirmation`): a contender whose paired 95% interval against
  the leader lies wholly below zero is dropped; the race stops when one is left or the seeds run out.

Confirmation trials are records of their own (``phase: confirm``, ``confirm_round``, ``confirm_of``) under
``confirm/<n>/trial.json``, numbered apart from Optuna's trials: no Optuna trial is made for them (the sampler never
sees a retraining at another budget), and nothing of the search (``n_trials``, the ranking, the slot scores) counts
them. Each also scores the test split once after training (``test_acc``, ``test_images``): a separately labelled
figure that no decision reads. Everything the race decides is derived from the records on disk, so a run started
again after a crash continues it: a complete trial is never trained again, one left ``running`` (or interrupted)
is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..candidate import Candidate
from ..confirmation import Confirmation
from ..entrants import Entrant, confirm_candidate, confirm_data, confirm_seeds, race_keys, select_entrants
from ..errors import AttnsearchError
from ..record import RETRY_REASONS, TrialRecord, timestamp, versions
from ..results import StudyResults
from ..signals import interrupted_by
from .events import (
    ConfirmEnded,
    ConfirmEpochEnded,
    ConfirmRoundEnded,
    ConfirmStarted,
    ConfirmTrialEnded,
    ConfirmTrialStarted,
    Event,
    Note,
)
from .executor import Executor, Job
from .runner import RunInterrupted, _ctrl_c
from .settings import TrialSettings

if TYPE_CHECKING:
    import torch

    from ..space import SearchSpace
    from ..spacefile import ConfirmSection
    from .store import ResultsStore

__all__ = ["Entrant", "confirm_candidate", "confirm_data", "confirm_seeds", "run_confirmation", "select_entrants"]

_LAST_EPOCH_ONLY = 1_000_000  # first_val_epoch of a confirmation trial: it is validated after its last epoch only


def run_confirmation(
    space: SearchSpace,
    store: ResultsStore,
    results: StudyResults,
    *,
    emit: Callable[[Event], None],
    device: str | None = None,
    torch_device: torch.device | None = None,
) -> StudyResults:
    """Run (or continue) the race of ``space`` after its search (``results``: the search's, read from ``store``);
    returns ``results`` with every confirmation record. ``device``: the run's (Ray workers resolve it);
    ``torch_device``: the local executor's.

    Raises :class:`~attnsearch.search.runner.RunInterrupted` after a stop signal, once the running confirmation
    trials are recorded as failed (interrupted) and the summary written; a run started again continues.
    """
    confirm = space.config.search.confirm
    assert confirm is not None
    results = replace(results, confirm_records={r.number: r for r in store.read_confirm_records()})
    entrants = select_entrants(results, confirm.top)
    if not entrants:
        emit(Note("no confirmation race: the search has no complete trial"))
        return results
    if len(entrants) < 2:
        emit(Note(f"no confirmation race: the baseline leads the top {confirm.top} (raise search.confirm.top)"))
        return results
    race = _Race(space, store, results, entrants, confirm, emit)
    return race.run(device, torch_device)


class _Race:
    def __init__(
        self,
        space: SearchSpace,
        store: ResultsStore,
        results: StudyResults,
        entrants: list[Entrant],
        confirm: ConfirmSection,
        emit: Callable[[Event], None],
    ) -> None:
        self.space, self.store, self.results, self.entrants, self.emit = space, store, results, entrants, emit
        self.confirm, self.data = confirm, confirm_data(space)
        used = {r.candidate.seed for r in results.records.values() if r.candidate is not None}
        used |= {repeat.seed for r in results.records.values() for repeat in r.repeats}
        self.seeds = confirm_seeds(space.name, confirm.seeds, avoid=used)
        self.keys = race_keys(space, results)
        self.metric = results.objectives[0][0]
        splits = [results.records[e.search_trial].split for e in entrants if e.search_trial in results.records]
        # whether the data have a test split: the search's records say (Dataset.split), with nothing loaded
        self.test = any("test_images" in split for split in splits)
        self.known = any(splits)
        self.attempts: dict[int, int] = {}  # confirmation trial -> times this run trained it

    def verdict(self) -> Confirmation:
        return self.results.confirmation(entrants=self.keys)

    def write(self, record: TrialRecord) -> None:
        self.store.write_record(record)
        self.results = self.results.with_confirm_record(record)

    def run(self, device: str | None, torch_device: torch.device | None) -> StudyResults:
        verdict = self.verdict()
        labels = tuple(e.candidate.describe() for e in self.entrants)
        self.emit(ConfirmStarted(labels, self.confirm.seeds, self._budget(), verdict.rounds))
        if self.known and not self.test:
            self.emit(Note(f"no test score: {self.data.dataset} has no test split"))
        executor: list[Executor] = []  # made when a trial is to be trained: a finished race starts nothing
        stop = threading.Event()
        try:
            with _ctrl_c(stop, lambda: executor[0].stop() if executor else None) as caught:
                while not verdict.finished and not stop.is_set():
                    r = verdict.rounds + 1
                    todo = self._todo(verdict, r)
                    if todo:
                        if not executor:
                            executor.append(self._executor(device, torch_device))
                        interrupted = self._train(todo, r, executor[0], stop)
                        if interrupted is not None or stop.is_set():
                            self.store.write_summary(self.results.summary(kept=self.store.kept_weights()))
                            which = f"confirmation trial {interrupted} recorded as failed (interrupted)"
                            raise RunInterrupted(f"{interrupted_by(caught.signum)}: {which}", caught.signum)
                    after = self.verdict()
                    if after.rounds >= r:
                        self._round_ended(after, r)
                    elif not todo:  # every trial of the round is over, yet the round is not: never expected
                        raise AttnsearchError(f"confirmation race: round {r} has every trial and is not over")
                    verdict = after
                if stop.is_set():  # a stop signal between two rounds
                    self.store.write_summary(self.results.summary(kept=self.store.kept_weights()))
                    raise RunInterrupted(f"{interrupted_by(caught.signum)}: stopped", caught.signum)
        finally:
            if executor:
                executor[0].close()
        self.emit(ConfirmEnded(verdict))
        return self.results

    def _todo(self, verdict: Confirmation, r: int) -> list[tuple[Entrant, Candidate, TrialRecord | None]]:
        """The trials round ``r`` still needs: each contender still in (and the baseline), unless its trial of the
        round is over on disk (complete, or failed on its own)."""
        out = {c.key for c in verdict.contenders if c.dropped_in is not None}
        by_key = {
            r.candidate.key(with_seed=True): r for r in self.results.confirm_records.values() if r.candidate is not None
        }
        todo = []
        for entrant, key in zip(self.entrants, self.keys, strict=True):
            if key in out and not entrant.baseline:
                continue
            candidate = confirm_candidate(entrant.candidate, self.confirm, self.seeds[r - 1], self.data)
            found = by_key.get(candidate.key(with_seed=True))
            retry = found is not None and found.state == "failed" and found.reason in RETRY_REASONS
            if found is None or found.state == "running" or retry:
                todo.append((entrant, candidate, found))
        return todo

    def _train(
        self, todo: list[tuple[Entrant, Candidate, TrialRecord | None]], r: int, executor: Executor, stop: Any
    ) -> int | None:
        """Train ``todo`` (round ``r``) through ``executor``, as many at once as it takes; returns the number of a
        trial interrupted by a stop signal, if any."""
        numbers = [*self.results.confirm_records]
        next_number = max(numbers, default=-1) + 1
        pending, running, interrupted = list(todo), {}, None

        def on_report(number: int, epoch: int, value: float | None, worker: Any) -> bool:
            record = running[number]
            assert record.candidate is not None
            self.emit(ConfirmEpochEnded(number, epoch, record.candidate.train.epochs, value))
            return False  # no pruning in the race

        while pending or running:
            while pending and len(running) < executor.capacity and not stop.is_set() and interrupted is None:
                entrant, candidate, found = pending.pop(0)
                if found is None:
                    number, next_number = next_number, next_number + 1
                else:
                    number = found.number
                    why = "was running when the last run stopped" if found.state == "running" else found.reason
                    self.emit(Note(f"confirmation trial {number} {why}: trained again"))
                record = TrialRecord(
                    number,
                    "running",
                    candidate=candidate,
                    phase="confirm",
                    confirm_round=r,
                    confirm_of=entrant.search_trial,
                    started=timestamp(),
                    worker=executor.worker,
                )
                self.write(record)
                self.emit(ConfirmTrialStarted(record))
                bare = replace(candidate, placements=())
                executor.submit(Job(number, candidate, init_from=bare, score_test=self.test))
                running[number] = record
                self.attempts[number] = self.attempts.get(number, 0) + 1
            if not running:
                break
            for job, outcome in executor.wait(on_report):
                record = replace(running.pop(job.number), **outcome.record_fields())
                record = replace(record, finished=timestamp(), versions=versions())
                if record.state == "complete" and record.score(self.metric) is None:
                    record = replace(record, state="failed", reason="no score: the run produced no validation result")
                elif record.reason in ("worker_lost", "killed") and self.attempts[job.number] > 1:
                    record = replace(record, reason=f"{record.reason} twice")  # its own failure from now on
                if record.reason == "interrupted":
                    interrupted = job.number
                self.write(record)
                self.emit(ConfirmTrialEnded(record))
        return interrupted

    def _round_ended(self, verdict: Confirmation, r: int) -> None:
        remaining = verdict.remaining
        means = {c.label: sum(c.scores.values()) / len(c.scores) for c in remaining if c.scores}
        sign = 1.0 if verdict.direction == "maximize" else -1.0
        leader = max(means, key=lambda label: sign * means[label]) if means else None
        dropped = tuple(c.label for c in verdict.contenders if c.dropped_in == r)
        self.emit(ConfirmRoundEnded(r, leader, dropped, tuple(c.label for c in remaining)))

    def _budget(self) -> str:
        recipe = confirm_candidate(self.entrants[0].candidate, self.confirm, 0, self.data).train
        budget = f"{recipe.steps} steps" if recipe.steps is not None else f"{recipe.epochs} epoch"
        budget += "" if (recipe.steps or recipe.epochs) == 1 else "s"
        size = self.data.train_size
        return budget + (f" on {size:,} training images" if size is not None else " on every training image")

    def _executor(self, device: str | None, torch_device: torch.device | None) -> Executor:
        """The race's own executor, of the kind the space names: its data at the race's budget, with the test split
        when the dataset has one (a local run that cannot load it goes on without, and says why)."""
        from ..plugins import plugin_specs

        execution = self.space.config.execution
        settings = TrialSettings(
            threads=execution.threads, first_val_epoch=_LAST_EPOCH_ONLY, plugins=tuple(plugin_specs())
        )
        if execution.executor == "local":
            from ..data import load_dataset
            from ..device import resolve_device
            from .executor import LocalExecutor

            test = self.test or not self.known
            try:
                dataset = load_dataset(self.data, test=test)
            except AttnsearchError as err:
                if not test:
                    raise
                self.emit(Note(f"no test score: {err}"))
                dataset = load_dataset(self.data)
            self.test = dataset.test_x is not None
            return LocalExecutor(dataset, torch_device or resolve_device(device or execution.device), settings)
        from .ray_executor import RayExecutor

        return RayExecutor(
            self.data,
            settings,
            device=device or execution.device,
            address=execution.address,
            cpus_per_trial=execution.cpus_per_trial,
            gpus_per_trial=execution.gpus_per_trial,
            max_concurrent=execution.max_concurrent,
            note=lambda text: self.emit(Note(text)),
            test=self.test,
        )
