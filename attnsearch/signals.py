"""The signals that ask attnsearch to stop, and what a stop leaves behind: one line and exit code 128 + the signal.

Ctrl-C (SIGINT) was always a clean stop. A job scheduler or a closed terminal sends other signals, and every one of
them is taken the same way while a command runs: the trial loop lets the running trials stop at their next step,
records them as failed (``interrupted``) and writes the summary; a second signal interrupts at once. Which ones:

- SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, ``docker stop``, systemd, and Slurm's ``scancel`` and time
  limit, PBS's ``qdel``), SIGHUP (the terminal was closed, or an SSH session dropped): taken unless the process
  was started with the signal ignored, as ``nohup`` (SIGHUP) and a shell's background jobs (SIGINT) start it;
  such a run keeps going, as its user asked.
- SIGXCPU (a CPU-time limit: ``ulimit -t``, Grid Engine's ``s_cpu``), SIGUSR1 and SIGUSR2 (what Slurm's
  ``--signal`` and Grid Engine's ``s_rt`` send ahead of a time limit): taken only while no one else handles them,
  since by default they end the process at once; a library or a user that installed its own handler keeps it.

The exit code follows the shell's convention, 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 129 for
SIGHUP. After a hang-up the terminal may be gone, so writing to it fails (EIO; EPIPE for a closed pipe): such an
error drops the output (:func:`drop_output`) rather than turning a clean stop into a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = [
    "STOP_SIGNALS",
    "Stopped",
    "drop_output",
    "exit_code",
    "interrupted_by",
    "say",
    "signal_name",
    "stop_signals",
]

# taken unless ignored (SIG_IGN) when the process started
_ALWAYS = ("SIGINT", "SIGTERM", "SIGHUP")
# taken only while their handler is the default one (which ends the process) or one of ours
_WHEN_DEFAULT = ("SIGXCPU", "SIGUSR1", "SIGUSR2")
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in (*_ALWAYS, *_WHEN_DEFAULT) if hasattr(signal, name)
)


class Stopped(KeyboardInterrupt):
    """A stop signal that interrupts at once: outside the trial loop, or a second one inside it.

    A kind of ``KeyboardInterrupt``, so that code which lets Ctrl-C through lets it through too; ``signum`` is the
    signal, ``message`` what the command line says about it.

    Example:
        >>> import signal
        >>> stop = Stopped(signal.SIGTERM)
        >>> stop.message, stop.exit_code
        ('interrupted by SIGTERM', 143)
    """

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        self.message = message or interrupted_by(signum)
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number this platform does not name.

    Example:
        >>> signal_name(1), signal_name(99)
        ('SIGHUP', 'signal 99')
    """
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The exit code of a command stopped by ``signum``: 128 + its number, as a shell reports a process it killed.

    Example:
        >>> exit_code(2), exit_code(15), exit_code(1)
        (130, 143, 129)
    """
    return 128 + int(signum)


def interrupted_by(signum: int) -> str:
    """``interrupted`` for Ctrl-C (as it always said), ``interrupted by SIGTERM`` for any other signal."""
    return "interrupted" if signum == signal.SIGINT else f"interrupted by {signal_name(signum)}"


@contextlib.contextmanager
def stop_signals(handler: Callable[[int], None]) -> Iterator[tuple[int, ...]]:
    """While inside, each stop signal (:data:`STOP_SIGNALS`, as the module's docstring chooses) calls
    ``handler(signum)`` in the main thread; the handlers found on entry come back on exit. Yields the signals
    taken. Outside the main thread (where Python cannot install a handler) nothing is taken.

    Example:
        >>> import os, signal
        >>> seen = []
        >>> with stop_signals(seen.append) as taken:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        >>> seen == [signal.SIGTERM] and signal.SIGTERM in taken
        True
    """
    if threading.current_thread() is not threading.main_thread():
        yield ()
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        handler(signum)

    handle._attnsearch_stop = True  # type: ignore[attr-defined]  # an outer stop_signals' handler is ours
    previous: dict[int, signal.Handlers | Callable[..., object] | int | None] = {}
    try:
        for signum in STOP_SIGNALS:
            found = signal.getsignal(signum)
            if found == signal.SIG_IGN:
                continue
            if signal.Signals(signum).name in _WHEN_DEFAULT and not (
                found == signal.SIG_DFL or getattr(found, "_attnsearch_stop", False)
            ):
                continue
            previous[signum] = found
            signal.signal(signum, handle)
        yield tuple(previous)
    finally:
        for signum, found in previous.items():
            signal.signal(signum, found if found is not None else signal.SIG_DFL)


def drop_output() -> None:
    """Point this process's stdout and stderr at ``os.devnull``: the terminal or pipe they wrote to is gone.

    Whatever is still buffered is then flushed into nothing, so the interpreter's exit does not fail on it (Python
    reports such a failure as exit code 120); the recipe of Python's documentation, "Note on SIGPIPE".
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def say(line: str) -> None:
    """Write ``line`` to stderr, after flushing stdout; a terminal that is gone drops the output instead."""
    for stream, text in ((sys.stdout, ""), (sys.stderr, line + "\n")):
        if stream is None:
            continue
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            drop_output()
            return
