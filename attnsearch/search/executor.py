"""Executors move Candidates to workers and outcomes back, and nothing else.

The runner submits jobs up to ``capacity`` and then waits; while it waits, the executor hands each epoch score to
the runner's ``on_report`` (which asks the pruner) and sends the answer back to the worker, so a pruned trial stops
at the epoch it was judged on. :class:`LocalExecutor` runs one trial at a time in this process and needs no Ray;
``attnsearch.search.ray_executor.RayExecutor`` runs trials in long-lived Ray actors.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..candidate import Candidate
from ..data import Dataset
from ..record import WorkerInfo
from .settings import TrialSettings
from .worker import TrialOutcome, run_candidate

__all__ = ["Executor", "Job", "LocalExecutor", "OnReport", "TrialSettings"]

# (trial number, epoch, value, where it runs) -> prune now? A value of None is progress alone: an epoch that was
# not validated (TrialSettings.first_val_epoch), whose answer nobody waits for
OnReport = Callable[[int, int, float | None, WorkerInfo], bool]


@dataclass(frozen=True)
class Job:
    number: int  # the Optuna trial number; a confirmation trial's own number (attnsearch.search.confirm)
    candidate: Candidate
    # confirmation trials only: the bare backbone whose initialisation the candidate's shared layers start from,
    # and whether to score the test split once at the end (see attnsearch.search.worker.run_candidate)
    init_from: Candidate | None = None
    score_test: bool = False


class Executor(Protocol):
    capacity: int  # trials that can run at once
    worker: WorkerInfo  # where a submitted trial runs, when known before it starts (empty when not)

    def submit(self, job: Job) -> None: ...

    def wait(self, on_report: OnReport) -> list[tuple[Job, TrialOutcome]]:
        """Block until at least one submitted job is done, or the capacity changed (a Ray actor replacing a lost
        one has started: an empty list); return the finished ones."""
        ...

    def stop(self) -> None:
        """Ask running trials to stop at their next step (Ctrl-C): they come back as failed, 'interrupted'."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """One trial at a time, in this process, on ``device``.

    A subclass may time a trial from outside without changing it (``attnsearch bench overhead`` does): the
    trainer polls :meth:`should_stop` after every training step, and every epoch's report passes through the
    ``on_report`` that :meth:`wait` is given.
    """

    capacity = 1

    def __init__(self, dataset: Dataset, device: torch.device, settings: TrialSettings) -> None:
        self.dataset = dataset.to(device)
        self.device = device
        self.settings = settings
        self.queue: list[Job] = []
        self.stopping = False
        self.worker = WorkerInfo(host=socket.gethostname(), pid=os.getpid(), device=str(device))

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def wait(self, on_report: OnReport) -> list[tuple[Job, TrialOutcome]]:
        job = self.queue.pop(0)
        outcome = run_candidate(
            job.candidate,
            self.dataset,
            device=self.device,
            constraints=self.settings.constraints,
            repeats=self.settings.repeats,
            threads=self.settings.threads,
            report=lambda epoch, value: on_report(job.number, epoch, value, self.worker),
            should_stop=self.should_stop,
            keep_weights=self.settings.keep_weights,
            first_val_epoch=self.settings.first_val_epoch,
            init_from=job.init_from,
            score_test=job.score_test,
        )
        outcome.classes = tuple(self.dataset.classes)
        return [(job, outcome)]

    def should_stop(self) -> bool:
        """Polled by the trainer after every step: True once :meth:`stop` was called."""
        return self.stopping

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        self.queue.clear()
