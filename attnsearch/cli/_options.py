"""Options that several commands share, defined once: ``--json``, RESULTS_DIR, ``--device``, ``--plugin``, the
benchmarks' own.

``--device`` is checked by :func:`attnsearch.device.check_device`, the check the space file's
``execution.device`` goes through too; a benchmark measures the device it is told, so its ``--device`` refuses
``auto``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import AttnsearchError

__all__ = [
    "bench_device_option",
    "bench_threads_option",
    "defaulted_option",
    "device_option",
    "json_option",
    "plugin_option",
    "results_dir_argument",
    "save_option",
]


def defaulted_option(*names: str, **settings: Any) -> Callable[[Any], Any]:
    """``click.option`` whose help shows its default (``show_default=True``), as every option with one here does."""
    return click.option(*names, show_default=True, **settings)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

results_dir_argument = click.argument("results_dir", metavar="RESULTS_DIR", type=click.Path(file_okay=False))


def device_option(*, allow_auto: bool = True, **settings: Any) -> Callable[[Any], Any]:
    """``--device``, its value checked by ``check_device``; ``settings`` are click's (default, help, ...)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        from ..device import check_device

        if value is None:
            return None
        try:
            return check_device(value, allow_auto=allow_auto)
        except AttnsearchError as err:
            # click names the option; the check's own "device 'x': " prefix would say it twice
            reason = str(err).rpartition(": ")[2]
            raise click.BadParameter(reason, ctx=ctx, param=param, param_hint=param.opts[0]) from None

    return click.option("--device", callback=check, **settings)


def _load_plugins(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    from ..plugins import load_plugins

    load_plugins(value)  # and the installed entry points; a bad plug-in is one AttnsearchError line, exit 2


# Loads the plug-ins (and the installed entry points) while the command line is parsed, before the command's body.
plugin_option = click.option(
    "--plugin",
    multiple=True,
    metavar="PATH_OR_MODULE",
    expose_value=False,
    callback=_load_plugins,
    help="A plug-in's .py file or module name (modules, backbones, datasets of your own); repeatable.",
)

save_option = defaulted_option("--save/--no-save", default=True, help="Write the raw figures to results/benchmarks/.")
bench_device_option = device_option(allow_auto=False, default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
bench_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), help="Torch threads  [default: torch's, all cores]"
)
