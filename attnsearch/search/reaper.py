"""A watchdog for a Ray instance the driver started: when the driver dies, even by kill -9, its Ray processes go too.

Ray's head processes share the driver's fate, but some of their children (agents) outlive them. The reaper, a tiny
process of its own, keeps a list of the driver's descendants (pid and start time, so a reused pid is never hit) and
kills the ones still alive once the driver is gone. Linux only (it reads /proc); elsewhere it exits at once.

It is started before Ray, with a mark the driver puts in its own environment (:data:`MARK`), which every process
Ray starts inherits. Once the driver is gone the reaper also kills every process carrying that mark: a process
spawned after its last look and orphaned since (Ray's agents when a signal ends the driver while Ray starts) has
no parent left to find it by, but still has its environment.

Usage: ``python -m attnsearch.search.reaper DRIVER_PID [MARK_VALUE]``
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

__all__ = ["MARK", "descendants", "main", "marked"]

MARK = "ATTNSEARCH_RAY_RUN"  # the environment variable whose value names one run's Ray


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])  # ppid, starttime (fields 4 and 22 of stat)


def descendants(root: int) -> dict[int, int]:
    """Every living descendant of ``root``: pid -> start time."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(stat[0], []).append(int(name))
            started[int(name)] = stat[1]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started[child]
                todo.append(child)
    return found


def marked(value: str) -> dict[int, int]:
    """Every living process of this user whose environment holds ``MARK=value``: pid -> start time.

    Example:
        >>> marked("no run has this mark")
        {}
    """
    entry = f"{MARK}={value}".encode()
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                carries = entry in f.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if carries and (stat := _stat(int(name))) is not None:
            found[int(name)] = stat[1]
    return found


def main(argv: list[str]) -> int:
    if not os.path.isdir("/proc"):
        return 0
    driver = int(argv[1])
    mark = argv[2] if len(argv) > 2 else None
    me = os.getpid()
    known: dict[int, int] = {}
    while _stat(driver) is not None:
        known.update(descendants(driver))
        time.sleep(1.0)
    if mark:
        known.update(marked(mark))
    for pid, start in known.items():
        stat = _stat(pid)
        if pid != me and stat is not None and stat[1] == start:
            with contextlib.suppress(OSError):  # gone in the meantime
                os.kill(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
