"""`attnsearch run` on a real terminal (tmux): the dashboard appears, moves on, and leaves the terminal clean,
after the run ends, after Ctrl-C and after a stop signal (SIGTERM, SIGHUP).

No test races the run: one that looks for the dashboard moving on watches a trial of 10,000 epochs and ends it
itself; the one that looks at the end of a run waits for its exit code alone, which stays on screen.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Pane:
    """The one pane of a tmux server of its own (``-L``): no test waits on a server another test is shutting down."""

    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.name, "-f", os.devnull, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"tmux {' '.join(args[:1])}: {done.stderr}"
        return done.stdout

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def flags(self) -> tuple[str, str]:
        """(alternate screen on, cursor shown) as tmux reports them: '0', '1' for a clean terminal."""
        shown = self.tmux("display-message", "-p", "-t", self.name, "#{alternate_on} #{cursor_flag}").split()
        return shown[0], shown[1]

    def wait(self, found: Callable[[str], object], timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if found(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"timed out; the pane shows:\n{self.text()}")


ENDLESS = {"train": {"epochs": 10_000}, "search": {"n_trials": 1, "pruner": "none"}}  # ends only when stopped
EPOCH = re.compile(r"\b(\d+)/10000\b")  # the running trial's epoch column
EXIT = re.compile(r"^EXIT=\d+$", re.MULTILINE)  # the exit code echoed after the run (not the command line typed)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    name = f"attnsearch-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {"PS1": "PROMPT$ ", "TERM": "xterm-256color", "HOME": os.environ.get("HOME", "/tmp")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    pane = Pane(name)
    pane.tmux(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        "120",
        "-y",
        "40",
        "-c",
        str(tmp_path),
        *(x for k, v in env.items() for x in ("-e", f"{k}={v}")),
        "bash --norc --noprofile",
    )
    try:
        yield pane
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], check=False, capture_output=True)


def start(pane: Pane, *extra: str) -> None:
    """`attnsearch run tiny.yaml` in the pane, its pid written to run.pid (the shell execs it), then its exit code."""
    command = [sys.executable, "-m", "attnsearch", "run", "tiny.yaml", "--results", "results", *extra]
    pid_first = shlex.join(["sh", "-c", 'echo $$ > run.pid; exec "$0" "$@"', *command])
    pane.send(f"clear; {pid_first}; echo EXIT=$?", "Enter")


def epoch(text: str) -> int | None:
    found = EPOCH.search(text)
    return int(found.group(1)) if found else None


def test_dashboard_appears_moves_on_and_ctrl_c_leaves_the_terminal_clean(
    pane: Pane, tiny_space_file: Callable[..., Path]
) -> None:
    # one trial of 10,000 epochs: the run cannot end, nor its trial, between two looks; the test ends it
    tiny_space_file(**ENDLESS)
    start(pane)
    first = pane.wait(lambda t: "attnsearch · tiny" in t and (epoch(t) or 0) >= 1)
    assert "Running (1)" in first and "Placement map" in first and "Leaderboard" in first
    seen = epoch(first)
    assert seen is not None
    later = pane.wait(lambda t: (epoch(t) or 0) > seen)
    assert later != first  # the dashboard moved on: the trial's later epoch is drawn
    pane.send("C-c")
    end = pane.wait(lambda t: EXIT.search(t))
    assert "EXIT=130" in end and "interrupted: trial 0 recorded as failed (interrupted)" in end
    assert "Traceback" not in end and "attnsearch · tiny" not in end  # the dashboard is gone with the alternate screen
    assert pane.flags() == ("0", "1")
    pane.send("echo DONE-MARKER", "Enter")
    pane.wait(lambda t: re.search(r"^DONE-MARKER$", t, re.MULTILINE))


def test_a_run_that_ends_leaves_its_tables_and_a_clean_terminal(
    pane: Pane, tiny_space_file: Callable[..., Path]
) -> None:
    tiny_space_file()  # the tiny run: over in seconds; the test waits for its end alone, which no look can miss
    start(pane)
    end = pane.wait(lambda t: EXIT.search(t))
    assert "EXIT=0" in end
    assert "Leaderboard" in end and "Best module per slot" in end and "Results: results/tiny" in end
    assert "attnsearch · tiny" not in end  # the dashboard is gone with the alternate screen
    assert pane.flags() == ("0", "1")
    pane.send("echo DONE-MARKER", "Enter")
    pane.wait(lambda t: re.search(r"^DONE-MARKER$", t, re.MULTILINE))


@pytest.mark.reliability
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_leaves_the_terminal_clean_with_exit_128_plus_n(
    signum: signal.Signals, pane: Pane, tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    tiny_space_file(**ENDLESS)
    start(pane)
    pane.wait(lambda t: "attnsearch · tiny" in t and (epoch(t) or 0) >= 1)  # the dashboard is up, mid-trial
    assert pane.flags()[0] == "1"  # on the alternate screen
    os.kill(int((tmp_path / "run.pid").read_text()), signum)  # as timeout, scancel, systemd would
    end = pane.wait(lambda t: EXIT.search(t))
    assert f"EXIT={128 + signum}" in end, end
    assert f"attnsearch: interrupted by {signum.name}: trial 0 recorded as failed (interrupted)" in end
    assert "Traceback" not in end and "attnsearch · tiny" not in end
    assert pane.flags() == ("0", "1")  # the alternate screen left, the cursor shown
    trial = json.loads((tmp_path / "results" / "tiny" / "trials" / "0" / "trial.json").read_text())
    assert (trial["state"], trial["reason"]) == ("failed", "interrupted")
    assert json.loads((tmp_path / "results" / "tiny" / "summary.json").read_text())["states"] == {"failed": 1}
