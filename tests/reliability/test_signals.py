"""Stop signals as a scheduler or a closed terminal sends them: SIGTERM, SIGHUP and the others end a real
`attnsearch run` the way Ctrl-C does (the running trial recorded failed/interrupted, summary.json written, one line
naming the signal, exit 128 + N), also when the terminal is gone; a second signal stops at once; nohup is obeyed.

Every run here has one trial of 10,000 epochs: it cannot end by itself while a test looks, so no test races it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attnsearch.search import runner
from processes import wait_for_line
from attnsearch.signals import Stopped, stop_signals

pytestmark = [pytest.mark.reliability]

ENDLESS = {"train": {"epochs": 10_000}, "search": {"n_trials": 1, "pruner": "none"}}  # ends only when stopped


def hang_ups_default() -> None:
    """In the child before it runs: SIGHUP as a terminal's process gets it, whatever this test process inherited (a
    suite started under nohup would pass its ignored SIGHUP on, and the run would rightly obey it)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def command(space: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attnsearch", "run", str(space), "--results", str(results), *extra]


def the_trial(results: Path) -> dict:
    (path,) = (results / "tiny" / "trials").glob("*/trial.json")
    return json.loads(path.read_text())


def the_summary(results: Path) -> dict:
    return json.loads((results / "tiny" / "summary.json").read_text())


@pytest.fixture
def endless(tiny_space_file: Callable[..., Path]) -> Path:
    return tiny_space_file(**ENDLESS)


# ------------------------------------------------------------------------------------ a real run, signalled


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_stop_signal_ends_a_run_as_ctrl_c_does(signum: signal.Signals, endless: Path, tmp_path: Path) -> None:
    """SIGTERM (timeout, scancel, docker stop), SIGHUP (a closed terminal), SIGUSR1 (Slurm's --signal)."""
    results = tmp_path / "r"
    run = subprocess.Popen(
        command(endless, results, "--no-dashboard"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hang_ups_default,
    )
    wait_for_line(run, "trial 0 epoch: epoch 1/10000")  # mid-trial
    run.send_signal(signum)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, out + err
    assert err.splitlines() == [f"attnsearch: interrupted by {signum.name}: trial 0 recorded as failed (interrupted)"]
    assert "Traceback" not in out + err
    trial = the_trial(results)
    assert (trial["state"], trial["reason"]) == ("failed", "interrupted") and trial["finished"]
    assert the_summary(results)["states"] == {"failed": 1}


@pytest.mark.slow
def test_a_run_started_under_nohup_goes_on_through_a_hang_up(endless: Path, tmp_path: Path) -> None:
    results = tmp_path / "r"
    run = subprocess.Popen(
        ["nohup", *command(endless, results, "--no-dashboard")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(run, "trial 0 epoch: epoch 1/10000")
    run.send_signal(signal.SIGHUP)  # ignored, as nohup asked: the trial trains on
    wait_for_line(run, "trial 0 epoch: epoch 3/10000")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, out + err
    assert "interrupted by SIGTERM: trial 0 recorded as failed (interrupted)" in err
    assert the_trial(results)["reason"] == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("dashboard", [True, False], ids=["dashboard", "plain-log"])
def test_a_hang_up_whose_terminal_is_gone_still_records_the_trial(
    dashboard: bool, endless: Path, tmp_path: Path
) -> None:
    """The run writes to a terminal (a pty) that is closed before SIGHUP comes: every write fails with EIO."""
    results, scratch = tmp_path / "r", tmp_path / "tmp"
    scratch.mkdir()
    master, slave = os.openpty()
    env = {**os.environ, "TMPDIR": str(scratch), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    extra = () if dashboard else ("--no-dashboard",)
    try:
        run = subprocess.Popen(
            command(endless, results, *extra),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
            preexec_fn=hang_ups_default,
        )
    finally:
        os.close(slave)
    seen = b""
    deadline = time.monotonic() + 300
    while b"1/10000" not in seen:  # epoch 1 is on screen: mid-trial
        assert time.monotonic() < deadline and run.poll() is None, seen.decode(errors="replace")[-2000:]
        if select.select([master], [], [], 1.0)[0]:
            seen += os.read(master, 1 << 16)
    os.close(master)  # the terminal is gone
    run.send_signal(signal.SIGHUP)
    assert run.wait(timeout=120) == 129  # not 1 (a traceback), not 120 (stdout failed to flush at exit)
    trial = the_trial(results)
    assert (trial["state"], trial["reason"]) == ("failed", "interrupted")
    assert the_summary(results)["states"] == {"failed": 1}
    assert not list(scratch.glob("attnsearch-traceback-*"))  # no internal error was written down either


# ------------------------------------------------------------------------------------ in this process


@pytest.fixture
def caught_here() -> Iterator[list[int]]:
    """SIGTERM and SIGHUP land in a list while a test runs, should attnsearch not take them (never kills pytest)."""
    seen: list[int] = []
    taken = (signal.SIGTERM, signal.SIGHUP)
    before = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in taken}
    try:
        yield seen
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_the_first_signal_asks_the_executor_to_stop_and_a_second_stops_at_once(caught_here: list[int]) -> None:
    stop, stopped = threading.Event(), []
    outside = signal.getsignal(signal.SIGTERM)
    with runner._ctrl_c(stop, lambda: stopped.append(True)) as caught:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set() and stopped == [True] and caught.signum == signal.SIGTERM
        with pytest.raises(Stopped) as second:
            signal.raise_signal(signal.SIGHUP)
        assert second.value.signum == signal.SIGHUP and second.value.exit_code == 129
        assert stopped == [True]  # the executor was asked once
    assert signal.getsignal(signal.SIGTERM) is outside and caught_here == []


def test_a_signal_someone_else_handles_or_ignores_is_left_to_them() -> None:
    mine = []
    before = (signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGHUP))
    signal.signal(signal.SIGUSR2, lambda signum, frame: mine.append(signum))  # e.g. a profiler's
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it
    try:
        with stop_signals(lambda signum: pytest.fail(f"took {signum}")) as taken:
            signal.raise_signal(signal.SIGUSR2)
            signal.raise_signal(signal.SIGHUP)
        assert mine == [signal.SIGUSR2]
        assert signal.SIGUSR2 not in taken and signal.SIGHUP not in taken and signal.SIGTERM in taken
    finally:
        signal.signal(signal.SIGUSR2, before[0])
        signal.signal(signal.SIGHUP, before[1])
