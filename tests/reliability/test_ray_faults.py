"""Under Ray, a module that raises or runs out of memory inside an actor fails its trial alone; the study goes on.

The faults are planted in the actor processes by Ray's ``worker_process_setup_hook`` (see ``_ray_fault_hook``), on
a Ray this module starts itself (``start_ray`` with that runtime_env): the run finds it running, uses it and leaves
it to us to stop. The hook also
tells actors they hold a GPU, so an OOM takes the executor's CUDA path: the actor is retired and replaced.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import _ray_fault_hook as hook  # beside this file: pytest puts this folder on the path (no __init__.py here)
from attnsearch.search.ray_executor import start_ray, stop_ray
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space
from processes import running

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # where attnsearch is

CHANGES = {
    "slots": {"block3": ["none", "cbam", "eca", "se"]},  # run in this order, one at a time: se comes after the OOM
    "train": {"epochs": 1},
    "search": {"sampler": "grid"},
    "execution": {"executor": "ray", "cpus_per_trial": 1, "max_concurrent": 1},
}
ORDER = ["baseline (nothing placed)", "block3=cbam", "block3=eca", "block3=se"]


@pytest.fixture(scope="module", autouse=True)
def faulty_ray():
    """A local Ray whose every worker process runs the fault hook; stopped (with its reaper) when the module ends."""
    import ray

    assert not ray.is_initialized(), "another Ray is still up in this process"
    # the hook runs before Ray puts the driver's working directory on a worker's path: name both folders
    pythonpath = os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with pytest.MonkeyPatch.context() as env:  # start_ray's own settings must not outlive the module
        env.setenv("RAY_AUTH_MODE", "disabled")
        env.setenv("RAY_DEDUP_LOGS", "0")
        hook_env = {"worker_process_setup_hook": "_ray_fault_hook.install", "env_vars": {"PYTHONPATH": pythonpath}}
        assert start_ray(None, runtime_env=hook_env)
    try:
        yield
    finally:
        stop_ray()  # Ray and its reaper


def test_module_faults_in_actors_fail_their_trials_and_an_oom_retires_a_gpu_actor(
    tmp_path: Path, tiny_space: Callable[..., dict]
) -> None:
    result = run_search(parse_space(tiny_space(**CHANGES)), results=tmp_path)
    assert result.ran == len(ORDER)  # the study reached its trial count
    records = ResultsStore(tmp_path / "tiny").read_records()
    assert [t.label for t in records] == ORDER  # one at a time, in this order
    trials = {t.label: t for t in records}
    baseline, broken, oom, after = (trials[name] for name in ORDER)

    assert broken.state == "failed", hook_in_workers()
    assert f"RuntimeError: {hook.BUG}" in broken.reason
    assert baseline.state == "complete"
    assert oom.state == "failed" and oom.reason == "oom"
    assert after.state == "complete"  # the study goes on after the OOM
    for failed in (broken, oom):  # met in training, after the cost pass timed the candidate on its device
        assert failed.metrics.latency_ms > 0 and failed.history == ()
    assert [(r.state, r.epochs_run) for r in oom.repeats] == [("failed", 0)]  # the trainer caught it

    # all of it in actors; the one that raised a plain error went on, the one that ran out of memory was retired
    pid = [t.worker.pid for t in records]
    assert os.getpid() not in pid
    assert oom.worker.gpus == ("0",)
    assert pid[0] == pid[1] == pid[2] != pid[3]
    assert after.worker.actor != oom.worker.actor
    for _ in range(40):  # ray.kill ended its process
        if not running(pid[2]):
            break
        time.sleep(0.25)
    assert not running(pid[2])


def hook_in_workers() -> str:
    """What became of the fault hook in a Ray worker: it never raises (that would restart workers forever)."""
    import ray

    return f"fault hook in a Ray worker: {ray.get(ray.remote(hook.failure).remote(), timeout=60) or 'installed'}"
