"""``attnsearch bench executor``: the same short trials through the local executor and through Ray."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ExecutorBench", "bench_executor", "executor_table"]


@dataclass
class ExecutorBench:
    executor: str  # local | ray
    workers: int
    trials: int
    wall_seconds: float  # submitting the first trial to receiving the last outcome
    work_seconds: float  # the trials' own time, measured inside the workers, summed
    overhead_per_trial: float  # (workers x wall - work) / trials: what scheduling costs each trial
    efficiency: float  # work / (workers x wall): 1.0 is the ideal


def executor_table(results: list[ExecutorBench]) -> tuple[str, list[str], list[list[str]]]:
    """Title, columns and rows of :func:`bench_executor`'s figures, as ``attnsearch bench executor`` prints them."""
    rows = [
        [
            r.executor,
            str(r.workers),
            str(r.trials),
            f"{r.wall_seconds:.2f}",
            f"{r.work_seconds:.2f}",
            f"{r.overhead_per_trial * 1000:.0f}",
            f"{r.efficiency:.2f}",
        ]
        for r in results
    ]
    columns = ["executor", "workers", "trials", "wall s", "work s", "overhead ms/trial", "efficiency"]
    return "Executors, the same trials each", columns, rows


def _trial_space(steps: int) -> Any:
    from ..space import parse_space

    return parse_space(
        {
            "name": "bench-executor",
            "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
            "slots": {"block3": ["se"]},
            "data": {"dataset": "shapes", "image_size": 32, "train_size": 256, "val_size": 64},
            "train": {"epochs": 1, "steps": steps, "batch_size": 32, "lr": 0.05},
            "search": {"sampler": "random", "pruner": "none"},
        }
    )


def _measure(executor: Any, jobs: list[Any], label: str, workers: int) -> ExecutorBench:
    # one warm-up trial per worker: process start-up, imports and first-batch costs are not scheduling
    from ..search.executor import Job

    warm = [Job(-1 - i, jobs[0].candidate) for i in range(workers)]
    _drain(executor, warm, workers)
    started = time.perf_counter()
    outcomes = _drain(executor, jobs, workers)
    wall = time.perf_counter() - started
    work = sum(o.timings["total"] for o in outcomes)
    return ExecutorBench(
        label, workers, len(jobs), wall, work, (workers * wall - work) / len(jobs), work / (workers * wall)
    )


def _drain(executor: Any, jobs: list[Any], workers: int) -> list[Any]:
    queue, outcomes, running = list(jobs), [], 0
    while queue or running:
        while queue and running < workers:
            executor.submit(queue.pop(0))
            running += 1
        for _, outcome in executor.wait(lambda *args: False):
            if outcome.state != "complete":
                raise RuntimeError(f"benchmark trial failed: {outcome.reason}")
            outcomes.append(outcome)
            running -= 1
    return outcomes


def bench_executor(*, trials: int = 12, steps: int = 6, workers: tuple[int, ...] = (1, 2)) -> list[ExecutorBench]:
    """The same batch of short real trials through the local executor and through Ray with each worker count.

    Every trial trains the same candidate for ``steps`` optimizer steps on one thread, so the trials' work is equal
    and the difference in wall time is what each executor adds.
    """
    import optuna
    import torch

    from ..data import load_dataset
    from ..search.executor import Job, LocalExecutor, TrialSettings
    from ..search.ray_executor import RayExecutor, start_ray, stop_ray

    space = _trial_space(steps)
    candidate = space.suggest(optuna.trial.FixedTrial({}))
    jobs = [Job(i, candidate) for i in range(trials)]
    settings = TrialSettings(threads=1)
    results = [
        _measure(LocalExecutor(load_dataset(space.data_spec()), torch.device("cpu"), settings), jobs, "local", 1)
    ]
    started = start_ray(None)
    try:
        for count in workers:
            executor = RayExecutor(space.data_spec(), settings, max_concurrent=count)
            try:
                results.append(_measure(executor, jobs, "ray", executor.capacity))
            finally:
                executor.close()
    finally:
        if started:
            stop_ray()
    return results
