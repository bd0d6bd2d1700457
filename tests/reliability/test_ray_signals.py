"""SIGTERM to a run on the Ray executor: a clean stop, as under the local executor, whoever else the signal reaches.

The driver runs ``attnsearch run`` in a session of its own (``start_new_session``), as a job under a scheduler
does; every process of its Ray (head processes, actors, the reaper) is in that session, so what is left of the run
afterwards is found by session id. The signal goes to the driver alone (``kill``), to its process group (what a
terminal, ``timeout --foreground`` or a shell's job control reach: the driver and Ray's head processes, not the
actors, which Ray puts in groups of their own), or to every process of the run (``scancel`` signals every process
of a job step, ``docker stop`` every process of a container whose init forwards it).

What is right: the running trial is recorded failed, ``interrupted``, whether its actor was stopped by the driver
or died of the signal itself first (that loss is the stop's doing, not the cluster's: it is not ``worker_lost``,
and the candidate is queued again on the next run as any interrupted trial is); summary.json is written; one line
on stderr, exit 143; no traceback; no process of the run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from attnsearch.search.store import ResultsStore
from processes import running

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]  # where attnsearch is
CHANGES = {  # one trial of many short epochs: it is still running long after its first epoch is on screen
    "slots": {"block3": ["se"]},
    "train": {"epochs": 200},
    "search": {"sampler": "grid"},
    "execution": {"executor": "ray", "cpus_per_trial": 1, "threads": 1},
}


def _session(sid: int) -> list[int]:
    """The living processes (zombies aside) of session ``sid`` (Linux)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session
            found.append(int(name))
    return found


def _left_after(driver: subprocess.Popen, reapers: list[int]) -> list[int]:
    """The run's processes still alive 60 s after its driver ended: its session's, and its reapers (each in a
    session of its own)."""
    deadline = time.monotonic() + 60
    while True:
        left = _session(driver.pid) + [pid for pid in reapers if _session(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _start(tmp_path: Path, space: Path) -> subprocess.Popen:
    results = str(tmp_path / "r")
    command = [sys.executable, "-m", "attnsearch", "run", str(space), "--results", results, "--no-dashboard"]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _reapers(sid: int) -> list[int]:
    """The pids of the reapers watching this session's driver (each in a session of its own)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if b"attnsearch.search.reaper" in words and str(sid).encode() in words:
            found.append(int(name))
    return found


@pytest.mark.parametrize("to", ["driver", "group", "every process"])
def test_sigterm_stops_a_ray_run_cleanly(tmp_path: Path, tiny_space_file: Callable[..., Path], to: str) -> None:
    driver = _start(tmp_path, tiny_space_file(**CHANGES))
    for line in driver.stdout:  # the trial is running on its actor
        if "epoch 1/" in line:
            break
    else:
        pytest.fail(f"the run ended before its first epoch: {driver.wait()} {driver.stderr.read()}")
    reapers = _reapers(driver.pid)
    assert reapers and len(_session(driver.pid)) >= 4  # driver, Ray's head processes, the actor
    if to == "driver":
        driver.send_signal(signal.SIGTERM)
    elif to == "group":
        os.killpg(driver.pid, signal.SIGTERM)
    else:
        for pid in _session(driver.pid) + reapers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, out + err
    assert err.splitlines() == ["attnsearch: interrupted by SIGTERM: trial 0 recorded as failed (interrupted)"], err
    (trial,) = ResultsStore(tmp_path / "r" / "tiny").read_records()
    assert (trial.state, trial.reason) == ("failed", "interrupted")
    summary = json.loads((tmp_path / "r" / "tiny" / "summary.json").read_text())
    assert summary
    assert not _left_after(driver, reapers), "processes of the run left behind"


def test_sigterm_while_ray_starts_is_one_line_and_exit_143(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    driver = _start(tmp_path, tiny_space_file(**CHANGES))
    # Ray's head is starting: ray.init puts a handler of its own in place, that exited with code 15 and no word
    deadline = time.monotonic() + 300
    while not any(_is_raylet(pid) for pid in _session(driver.pid)):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.02)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, out + err
    (line,) = err.splitlines()
    assert line.startswith("attnsearch: interrupted by SIGTERM"), err
    assert not _left_after(driver, _reapers(driver.pid)), "processes of the run left behind"


def _is_raylet(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].endswith(b"/raylet")
    except OSError:
        return False


def test_the_reaper_kills_marked_orphans_of_a_dead_driver(tmp_path: Path) -> None:
    """What a signal during Ray's start leaves: processes orphaned before the reaper ever saw them as descendants.
    The reaper finds them by the mark in their environment; a process without the mark is left alone."""
    from attnsearch.search.reaper import MARK

    mark = f"test-{os.getpid()}"
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    orphans = {}
    for name, env in (("marked", {**os.environ, MARK: mark}), ("unmarked", dict(os.environ))):
        pidfile = tmp_path / name
        # started by a shell that exits at once: its parent is gone, as an agent's is once raylet dies
        launch = f"{sys.executable} -c 'import time; time.sleep(600)' & echo $! > {pidfile}"
        subprocess.run(["sh", "-c", launch], env=env, check=True, timeout=60)
        orphans[name] = int(pidfile.read_text())
    reaper = subprocess.Popen([sys.executable, "-m", "attnsearch.search.reaper", str(driver.pid), mark], cwd=ROOT)
    try:
        driver.kill()
        driver.wait(timeout=60)
        reaper.wait(timeout=120)  # it ends once it has swept
        assert not running(orphans["marked"])
        assert running(orphans["unmarked"])
    finally:
        for pid in orphans.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
