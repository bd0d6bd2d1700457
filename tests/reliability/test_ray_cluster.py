"""Several Ray nodes on this machine: trials spread over them, and a node lost mid-trial costs that trial alone.

Two clusters, each as small as the machine allows (one CPU per node, so each node holds exactly one actor):

- ``ray.cluster_utils.Cluster``: a head with no CPU (it holds the driver's report queue and nothing else) and two
  worker nodes. A node is removed while its actor waits for the driver's answer after epoch 1 (``epoch_val: all``
  makes every epoch a decision), so the loss always lands mid-trial.
- ``ray start --head`` and a second node joined with ``ray start --address``, found by ``execution.address: auto``
  from a driver in its own process. Teardown kills the processes those two commands started (their process groups
  and descendants), not ``ray stop``, which stops every Ray on the machine, other test runs' included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from attnsearch.record import counts_towards_target
from attnsearch.search.events import EpochEnded, Event
from attnsearch.search.reaper import _stat, descendants
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space
from processes import running

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[2]  # where attnsearch is
RAY_CLI = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
EXECUTION = {"executor": "ray", "cpus_per_trial": 1, "threads": 1}
CHANGES = {  # four candidates of two epochs, each epoch validated: an actor waits for the driver after epoch 1
    "slots": {"block3": ["none", "se", "eca", "cbam"]},
    "train": {"epochs": 2, "epoch_val": "all"},
    "search": {"sampler": "grid", "pruner": "none"},
}
RESCUE_AFTER = 300.0  # seconds: far beyond the run's time on a loaded machine (about 15 s on a quiet one)
LABELS = ["baseline (nothing placed)", "block3=cbam", "block3=eca", "block3=se"]


@pytest.fixture
def cluster() -> Iterator[tuple]:
    """A ``Cluster``: a head with no CPU and two worker nodes of one CPU each, in a temp folder of its own."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another Ray is still up in this process"
    temp = tempfile.mkdtemp(dir="/tmp", prefix="attnsearch-c-")  # short: Ray's socket paths go under it
    with pytest.MonkeyPatch.context() as env:  # start_ray's settings must not outlive the test
        env.setenv("RAY_AUTH_MODE", "disabled")
        env.setenv("RAY_DEDUP_LOGS", "0")
        head = {"num_cpus": 0, "include_dashboard": False, "temp_dir": temp}
        nodes = Cluster(initialize_head=True, head_node_args=head)
        try:
            workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
            nodes.wait_for_nodes()
            yield nodes, workers
        finally:
            ray.shutdown()  # the run connected to it and, not having started it, left it up
            nodes.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def test_trials_spread_over_nodes_and_a_node_lost_mid_trial_fails_that_trial_alone(
    tmp_path: Path, tiny_space: Callable[..., dict], cluster: tuple
) -> None:
    nodes, workers = cluster
    removed: list[tuple[int, str]] = []  # (trial, node)

    def remove_its_node(event: Event) -> None:
        # its actor waits for the answer to this epoch: the node goes mid-trial
        if isinstance(event, EpochEnded) and event.value is not None and not removed:
            (node,) = [n for n in workers if n.node_id == event.worker.node]
            removed.append((event.trial, node.node_id))
            nodes.remove_node(node)

    space = parse_space(tiny_space(**CHANGES, execution={**EXECUTION, "address": nodes.address}))
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["result"] = run_search(space, results=tmp_path, on_event=remove_its_node)
        except BaseException as err:
            ended["error"] = err

    # in a thread, so that a run stuck on an actor that cannot start fails the test instead of hanging the suite
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(RESCUE_AFTER)
    stuck = runner.is_alive()
    if stuck:
        nodes.add_node(num_cpus=1)  # room for the actor it waits for (from this, the main thread: Ray asks that)
        runner.join(RESCUE_AFTER)
    assert not stuck, f"the run waited {RESCUE_AFTER:g} s for an actor with no node to start on"
    if "error" in ended:
        raise ended["error"]
    result = ended["result"]
    trials = ResultsStore(tmp_path / "tiny").read_records()

    (lost_number, lost_node), (kept_node,) = removed[0], {w.node_id for w in workers} - {removed[0][1]}
    # spread: the first two trials started at once, one on each node (nothing on the head: it has no CPU)
    assert {t.worker.node for t in trials if t.number < 2} == {lost_node, kept_node}
    lost = [t for t in trials if t.reason == "worker_lost"]
    assert [t.number for t in lost] == [lost_number]
    assert lost[0].worker.node == lost_node and lost[0].worker.error  # where it was, and why it was lost
    retried = [t for t in trials if t.retry_of == lost_number]
    assert len(retried) == 1 and retried[0].state == "complete" and retried[0].params == lost[0].params
    assert retried[0].worker.node == kept_node  # the candidate ran again on the node that remains
    # every later trial ran there too: the lost actor's replacement found no room and was never given one
    assert {t.worker.node for t in trials if t.number > lost_number and t.number >= 2} == {kept_node}
    # the study reached n_trials: every candidate complete once, the lost trial not counted
    assert sorted(t.label for t in trials if t.state == "complete") == LABELS
    assert sum(counts_towards_target(t.state, t.reason) for t in trials) == len(LABELS) == result.results.target


def _started(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start ... --block`` in a session of its own, once it says its node is up (its output goes to ``log``)."""
    process = subprocess.Popen(
        [*RAY_CLI, *command, "--block", "--disable-usage-stats"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    up = threading.Event()

    def copy() -> None:
        with log.open("a") as out:
            for line in process.stdout:
                out.write(line)
                out.flush()
                if "will now block forever" in line:  # said once the node is up and its address written
                    up.set()
        up.set()  # it ended: the test sees that below

    threading.Thread(target=copy, daemon=True).start()
    up.wait(300)
    assert process.poll() is None, f"ray start failed: {log.read_text()}"
    return process


def _kill_all(processes: list[subprocess.Popen]) -> list[int]:
    """SIGKILL these processes, their process groups and every descendant; the pids still alive after 60 s."""
    family: dict[int, int] = {}
    for process in processes:
        family.update(descendants(process.pid))
        family[process.pid] = _stat(process.pid)[1] if _stat(process.pid) else 0
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its session's group: what it spawned, late ones included
    for pid, started in family.items():
        if (stat := _stat(pid)) is not None and stat[1] == started:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # one that left the group (a session of its own)
    for process in processes:
        process.wait(timeout=60)
    deadline = time.monotonic() + 60
    alive = list(family)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if running(pid)]
        time.sleep(0.2)
    return alive


@pytest.fixture
def ray_start(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``ray start --head`` (one CPU) and a second node of one CPU, under a RAY_TMPDIR of their own; the
    environment a driver finds them from with ``address: auto``."""
    temp = tempfile.mkdtemp(dir="/tmp", prefix="attnsearch-a-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=temp, RAY_AUTH_MODE="disabled")
    started: list[subprocess.Popen] = []
    try:
        log = tmp_path / "ray-start.log"
        head = ["start", "--head", f"--port={free_port()}", "--num-cpus=1", "--include-dashboard=false"]
        started.append(_started(head, env, log))
        address = (Path(temp) / "ray" / "ray_current_cluster").read_text().strip()  # what `ray start` left for `auto`
        started.append(_started(["start", f"--address={address}", "--num-cpus=1"], env, log))
        yield env
    finally:
        alive = _kill_all(started)
        shutil.rmtree(temp, ignore_errors=True)
        assert not alive, f"Ray processes left behind: {alive}"


def free_port() -> int:
    """A TCP port free on this machine now (for ``ray start --port``)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def test_address_auto_finds_a_cluster_started_with_ray_start_and_spreads_trials(
    tmp_path: Path, tiny_space: Callable[..., dict], ray_start: dict[str, str]
) -> None:
    space = tiny_space(
        **{**CHANGES, "slots": {"block3": ["none", "se"]}, "train": {"epochs": 1}},
        execution={**EXECUTION, "address": "auto"},
    )
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path / "r"), "--no-dashboard"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=ray_start)
    assert run.returncode == 0, run.stdout + run.stderr
    trials = ResultsStore(tmp_path / "r" / "tiny").read_records()
    assert [t.state for t in trials] == ["complete", "complete"]
    assert len({t.worker.node for t in trials}) == 2  # both trials at once, one on each node
