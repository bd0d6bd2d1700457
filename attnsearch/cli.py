"""The ``attnsearch`` command line. Each command calls one library function; bad input gets one line and exit 2."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_BAD_INPUT = 2

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


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


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(title, style="bold", highlight=False)
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnsearch")
def main() -> None:
    """Search which attention module belongs after which block of a VGG or DenseNet.

    \b
    Examples:
      attnsearch modules
      attnsearch slots vgg16_bn --image-size 32 --width 0.25
    """


@main.command()
@json_option
def modules(as_json: bool) -> None:
    """List the attention modules: registry key, paper, parameters with defaults.

    \b
    Example:
      attnsearch modules --json
    """
    from .attention import list_modules, module_info

    infos = [module_info(key) for key in list_modules()]
    if as_json:
        _print_json([{"key": i.key, "paper": i.paper, "arxiv": i.arxiv, "params": i.params} for i in infos])
        return
    rows = [[i.key, i.paper + (f" (arXiv {i.arxiv})" if i.arxiv else ""), _params_text(i.params)] for i in infos]
    _print_table("Attention modules", ["key", "paper", "parameters (defaults)"], rows)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in params.items()) or "-"


@main.command()
@click.argument("backbone")
@click.option(
    "--image-size", type=click.IntRange(min=1), default=224, show_default=True, help="Input height and width."
)
@click.option(
    "--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Channel multiplier."
)
@json_option
def slots(backbone: str, image_size: int, width: float, as_json: bool) -> None:
    """List the slots of BACKBONE with the channels and map size each one sees.

    \b
    Examples:
      attnsearch slots vgg16_bn --image-size 32
      attnsearch slots densenet_bc100 --image-size 32 --json
    """
    from .model import list_slots

    found = list_slots(backbone, image_size=image_size, width=width)
    if as_json:
        _print_json(
            [
                {
                    "name": s.name,
                    "channels": s.channels,
                    "height": s.height,
                    "width": s.width,
                    "block_level": s.block_level,
                }
                for s in found
            ]
        )
        return
    rows = [[s.name, str(s.channels), f"{s.height} x {s.width}"] for s in found]
    _print_table(
        f"Slots of {backbone} at {image_size}x{image_size}, width {width:g}", ["slot", "channels", "H x W"], rows
    )
