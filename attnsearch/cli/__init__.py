"""The ``attnsearch`` command line: one module per group of commands, each command calling one library function.

Bad input (a click usage error or a library ValueError) gets one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import bench, inspect, results, run

__all__ = ["main"]

EXIT_BAD_INPUT = 2


class _Group(click.Group):
    """Turns usage errors and library ValueErrors into one line on stderr and exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            click.echo("attnsearch: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as err:
            _fail(err.format_message())
        except ValueError as err:
            _fail(str(err))


def _fail(message: str) -> None:
    click.echo(f"attnsearch: error: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnsearch")
def main() -> None:
    """Search which attention module belongs after which block of a VGG or DenseNet.

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
    bench.bench,
):
    main.add_command(_command)
