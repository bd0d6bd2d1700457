"""`attnsearch run` on a real terminal (tmux): the dashboard appears, moves on, and leaves the terminal clean,
after the run ends and after Ctrl-C."""

from __future__ import annotations

import os
import re
import shlex
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

DONE = re.compile(r"(\d+)/(\d+) done")


class Pane:
    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

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


@pytest.fixture
def pane(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> Iterator[Pane]:
    # tiny.yaml, where the pane starts: trials of about a second each, so that the screen is seen between two
    # trials (at 128 images a trial takes 0.1 s, and a quiet machine finished the run between two looks)
    tiny_space_file(data={"train_size": 1024}, search={"n_trials": 4})
    name = f"attnsearch-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {"PS1": "PROMPT$ ", "TERM": "xterm-256color", "HOME": os.environ.get("HOME", "/tmp")}
    subprocess.run(
        [
            "tmux",
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
        ],
        check=True,
    )
    try:
        yield Pane(name)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)


def start(pane: Pane, *extra: str) -> None:
    command = [sys.executable, "-m", "attnsearch", "run", "tiny.yaml", "--results", "results", *extra]
    pane.send(f"clear; {shlex.join(command)}; echo EXIT=$?", "Enter")


def test_dashboard_appears_updates_and_leaves_the_terminal_clean(pane: Pane) -> None:
    start(pane)
    first = pane.wait(lambda t: "attnsearch · tiny" in t and DONE.search(t))
    assert "Running" in first and "Placement map" in first and "Leaderboard" in first
    done = int(DONE.search(first).group(1))
    later = pane.wait(lambda t: (m := DONE.search(t)) is not None and int(m.group(1)) > done)
    assert later != first  # the dashboard moved on: more trials done
    end = pane.wait(lambda t: "EXIT=" in t)
    assert "EXIT=0" in end
    assert "Leaderboard" in end and "Best module per slot" in end and "Results: results/tiny" in end
    assert "attnsearch · tiny" not in end  # the dashboard is gone with the alternate screen
    assert pane.flags() == ("0", "1")
    pane.send("echo DONE-MARKER", "Enter")
    pane.wait(lambda t: re.search(r"^DONE-MARKER$", t, re.MULTILINE))


def test_ctrl_c_leaves_the_terminal_clean_with_exit_130(pane: Pane, tiny_space_file: Callable[..., Path]) -> None:
    # long epochs, so that the run is surely still training when the test presses Ctrl-C on a fast machine
    tiny_space_file(data={"train_size": 4096}, train={"epochs": 20})
    start(pane, "--fresh")
    # a trial has finished an epoch (not validated: with no pruner, only the last epoch is, so its score shows "-")
    pane.wait(lambda t: re.search(r"\b[1-9]\d*/20\s+-", t))
    pane.send("C-c")
    end = pane.wait(lambda t: "EXIT=" in t, timeout=60)
    assert "EXIT=130" in end and "interrupted" in end and "Traceback" not in end
    assert pane.flags() == ("0", "1")
    pane.send("echo DONE-MARKER", "Enter")
    pane.wait(lambda t: re.search(r"^DONE-MARKER$", t, re.MULTILINE))
