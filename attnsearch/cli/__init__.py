"""The ``attnsearch`` command line: one module per group of commands, each command calling one library function.

Exit codes: 0 done; 2 the user's mistake (a click usage error or an :class:`~attnsearch.errors.AttnsearchError`),
answered with one line on stderr; 1 a bug, answered with a one-line summary and the file that holds its
traceback (``ATTNSEARCH_DEBUG=1`` prints the traceback instead); 128 + the signal's number when stopped by a
signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP (which signals, and why: :mod:`attnsearch.signals`).
A signal outside ``run``'s trial loop (which stops its trials cleanly first) interrupts at once, as Ctrl-C does.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from ..errors import AttnsearchError
from ..signals import Stopped, say, stop_signals
from . import bench, explain, inspect, results, run

__all__ = ["main"]

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DEBUG_VARIABLE = "ATTNSEARCH_DEBUG"


class _Group(click.Group):
    """Answers the user's mistakes with one line and exit 2, and anything else as the bug it is, with exit 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            with stop_signals(_stop_now):  # SIGTERM, SIGHUP ... as Ctrl-C: the terminal is given back, exit 128 + N
                return super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort as abort:  # click's answer to Ctrl-C (and to a stop signal before a command)
            stop = abort.__cause__ if isinstance(abort.__cause__, Stopped) else None
            _interrupted(stop.message if stop else "interrupted", stop.exit_code if stop else EXIT_INTERRUPTED)
        except click.ClickException as err:
            _bad_input(err.format_message())
        except AttnsearchError as err:
            _bad_input(str(err))
        except Exception as err:  # anything else is a bug of ours, whatever its type
            _bug(err)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Stopped as stop:  # before click turns it into an Abort (and writes a blank line first)
            _interrupted(stop.message, stop.exit_code)


def _stop_now(signum: int) -> None:
    raise Stopped(signum)


def _interrupted(message: str, code: int) -> NoReturn:
    say(f"attnsearch: {message}")  # after a hang-up the terminal may be gone: the line is dropped, not an error
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _bad_input(message: str) -> NoReturn:
    click.echo(f"attnsearch: error: {_one_line(message)}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _bug(err: Exception) -> NoReturn:
    import traceback

    trace = "".join(traceback.format_exception(err))
    message = _one_line(str(err))
    summary = f"attnsearch: internal error: {type(err).__name__}" + (f": {message}" if message else "")
    path = None if os.environ.get(DEBUG_VARIABLE) == "1" else _write_traceback(trace)
    if path is None:
        click.echo(trace, err=True, nl=False)
        where = "traceback above"
    else:
        where = f"traceback in {path}"
    click.echo(f"{summary} (a bug in attnsearch, not in your input; {where})", err=True)
    sys.exit(EXIT_BUG)


def _write_traceback(trace: str) -> str | None:
    """A new file under the temporary folder holding ``trace``; None when it cannot be written."""
    import tempfile
    import time

    prefix = f"attnsearch-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-"
    try:
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=".txt", text=True)
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(trace)
    except OSError:
        return None
    return path


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnsearch")
def main() -> None:
    """Search which attention module belongs after which block of a CNN (VGG, DenseNet, ResNet, a small CNN).

    \b
    Examples:
      attnsearch modules
      attnsearch slots vgg16_bn --image-size 32 --width 0.25
    """


for _command in (
    inspect.modules,
    inspect.slots,
    run.run,
    run.validate,
    results.export,
    results.replay,
    results.watch,
    results.report,
    explain.explain,
    bench.bench,
):
    main.add_command(_command)
