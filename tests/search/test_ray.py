"""`execution.executor: ray` on CPUs: one local Ray for the whole module, real actors, real faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from attnsearch.candidate import Candidate, PlacementSpec, TrainRecipe
from attnsearch.search.executor import Job
from attnsearch.record import TrialRecord
from attnsearch.search.events import EpochEnded, Event
from attnsearch.search.runner import run_search
from attnsearch.search.settings import TrialSettings
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space

pytestmark = pytest.mark.slow

RAY = {  # block3 alone (3 candidates), as a grid, on Ray
    "slots": {"block3": ["none", "se", "eca"]},
    "search": {"sampler": "grid"},
    "execution": {"executor": "ray", "cpus_per_trial": 1},
}


@pytest.fixture
def space(tiny_space: Callable[..., dict]) -> Callable[..., dict]:
    """``make(**changes)``: the tiny space with RAY, then ``changes`` (a section in changes takes RAY's place)."""
    return lambda **changes: tiny_space(**{**RAY, **changes})


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One Ray start for every test here; runs see it initialised and neither start nor stop it."""
    from attnsearch.search.ray_executor import start_ray, stop_ray

    assert start_ray(None)
    yield
    stop_ray()


def records(folder: Path) -> list[TrialRecord]:
    return ResultsStore(folder).read_records()


def test_two_workers_run_the_study_like_the_local_executor(tmp_path: Path, space: Callable[..., dict]) -> None:
    events = []
    run_search(parse_space(space()), results=tmp_path / "ray", keep_weights=3, on_event=events.append)
    # pruner none: epoch 1 is not validated, yet reaches the driver as progress (without a wait for an answer)
    epochs = sorted((e.trial, e.epoch, e.value is None) for e in events if isinstance(e, EpochEnded))
    assert epochs == [(n, epoch, epoch == 1) for n in range(3) for epoch in (1, 2)]
    local = space(execution={"executor": "local"})
    run_search(parse_space(local), results=tmp_path / "local", keep_weights=3)
    on_ray, here = records(tmp_path / "ray" / "tiny"), records(tmp_path / "local" / "tiny")
    assert len(on_ray) == len(here) == 3
    pids = {t.worker.pid for t in on_ray}
    assert os.getpid() not in pids and len(pids) == 2  # two actors, neither of them this process
    assert all(t.worker.node and t.worker.gpus == () for t in on_ray)
    # the same record on disk, and (deterministic on CPU) the same scores for the same candidates
    layout = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert layout(tmp_path / "ray" / "tiny") == layout(tmp_path / "local" / "tiny")
    by_candidate = {t.label: t.metrics.val_acc for t in here}
    assert {t.label: t.metrics.val_acc for t in on_ray} == by_candidate


def test_pruning_works_under_ray(tmp_path: Path, space: Callable[..., dict]) -> None:
    data = space(
        train={"epochs": 3, "lr": [0.003, 1.0e-9], "optimizer": "adamw", "weight_decay": 0.05},
        data={"train_size": 2048, "val_size": 512},
        search={"sampler": "grid", "n_trials": 1, "pruner": "median"},
        execution={"executor": "ray", "cpus_per_trial": 1, "threads": 1, "max_concurrent": 1},
    )
    run_search(parse_space(data), results=tmp_path)
    pruned = [t for t in records(tmp_path / "tiny") if t.state == "pruned"]
    assert pruned and all(len(t.history) < 3 for t in pruned)  # stopped within the epoch it was judged on


def test_failing_trials_fail_alone(tmp_path: Path, space: Callable[..., dict]) -> None:
    data = space(train={"epochs": 1, "lr": [0.05, 1.0e12], "label_smoothing": 0.0}, slots={"block3": ["none"]})
    run_search(parse_space(data), results=tmp_path)
    states = {t.candidate.train.lr: (t.state, t.reason) for t in records(tmp_path / "tiny")}
    assert states == {0.05: ("complete", None), 1.0e12: ("failed", "diverged")}


def test_an_exception_in_a_worker_fails_that_trial_and_the_worker_goes_on(space: Callable[..., dict]) -> None:
    from attnsearch.search.ray_executor import RayExecutor

    config = parse_space(space())
    executor = RayExecutor(config.data_spec(), TrialSettings(threads=1), max_concurrent=1)
    try:
        good = config.suggest(__import__("optuna").trial.FixedTrial({"block3": "se"}))
        # CBAM's spatial kernel is 3 or 7: the module raises when the worker builds it
        broken = (PlacementSpec("block3", "cbam", (("kernel_size", 5),)),)
        bad = Candidate(good.backbone, broken, TrainRecipe(epochs=1), good.data)
        executor.submit(Job(0, bad))
        ((_, failed),) = executor.wait(lambda *args: False)
        assert failed.state == "failed" and "kernel_size must be 3 or 7" in failed.reason
        # a candidate the worker cannot even read fails its trial too, on the same actor
        unreadable = Candidate(good.backbone, good.placements, TrainRecipe(epochs=1, optimizer="rmsprop"), good.data)
        executor.submit(Job(2, unreadable))
        ((_, refused),) = executor.wait(lambda *args: False)
        assert refused.state == "failed" and "optimizer" in refused.reason and refused.worker.pid == failed.worker.pid
        executor.submit(Job(1, good))
        ((_, fine),) = executor.wait(lambda *args: False)
        assert fine.state == "complete" and fine.worker.pid == failed.worker.pid  # the same, living actor
    finally:
        executor.close()


def test_a_worker_killed_mid_trial_is_replaced_and_its_candidate_retried(
    tmp_path: Path, space: Callable[..., dict]
) -> None:
    killed: list[int] = []

    def kill_first_worker(event: Event) -> None:
        if isinstance(event, EpochEnded) and not killed:
            killed.append(event.worker.pid)
            os.kill(killed[0], signal.SIGKILL)

    data = space(
        execution={"executor": "ray", "cpus_per_trial": 1, "threads": 1, "max_concurrent": 1}, train={"epochs": 3}
    )
    run_search(parse_space(data), results=tmp_path, on_event=kill_first_worker)
    trials = records(tmp_path / "tiny")
    lost = [t for t in trials if t.reason == "worker_lost"]
    assert len(lost) == 1
    retried = [t for t in trials if t.retry_of == lost[0].number]
    assert len(retried) == 1 and retried[0].state == "complete" and retried[0].params == lost[0].params
    assert retried[0].worker.pid != killed[0]  # a fresh actor took the lost one's place
    assert sum(t.state == "complete" for t in trials) == 3  # the study still reaches n_trials


def test_a_killed_driver_leaves_no_ray_process_and_the_run_resumes(tmp_path: Path, space: Callable[..., dict]) -> None:
    from attnsearch.search.reaper import descendants

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space(train={"epochs": 3})))
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path / "r"), "--no-dashboard"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and "epoch 1/" not in (driver.stdout.readline() or ""):
        pass
    family = descendants(driver.pid)
    assert len(family) >= 3  # its own Ray: head processes, workers, and the reaper
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    for _ in range(30):
        alive = [pid for pid in family if os.path.exists(f"/proc/{pid}")]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, f"left behind: {alive}"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = records(tmp_path / "r" / "tiny")
    assert any(t.reason == "killed" for t in trials)
    assert sum(t.state == "complete" for t in trials) == 3
