"""Driving a real ``attnsearch run`` process from a test: wait for a line it cannot skip, then act on it.

Imported as ``processes`` (tests/ is on the path through conftest.py, as ``tiny`` is).
"""

from __future__ import annotations

import signal
import subprocess
import time


def stop_signals_default() -> None:
    """``preexec_fn`` for a run a test stops with SIGINT or SIGHUP: both at their defaults in the child, whatever the
    suite inherited (a suite started in the background or under nohup has them ignored, and a run rightly obeys
    that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 300) -> str:
    """Read ``process``'s stdout (text, stderr merged or not) until a line holds ``needle``; return what was read.
    The process is killed and the test fails, with what it printed, when the line never comes."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"never saw {needle!r}:\n{''.join(seen)}")


def running(pid: int) -> bool:
    """Whether process ``pid`` is alive and not a zombie waiting for its parent (Linux's /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
