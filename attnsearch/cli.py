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


@main.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--results",
    type=click.Path(file_okay=False),
    default="results",
    show_default=True,
    help="Folder that holds one sub-folder per study.",
)
@click.option("--trials", "n_trials", type=click.IntRange(min=1), help="Override search.n_trials.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop asking for trials after S seconds.")
@click.option("--device", help="Override execution.device: auto, cpu, cuda, cuda:N.")
@click.option("--fresh", is_flag=True, help="Start over: the old results folder is moved aside, not deleted.")
@click.option("--storage", help="Any Optuna storage URL (e.g. postgresql://...) for a study shared by several runs.")
@click.option(
    "--keep-weights",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep model.pt of the best K trials.",
)
@click.option("--force", is_flag=True, help="Run a grid larger than the grid limit.")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
def run(
    space_file: str,
    results: str,
    n_trials: int | None,
    timeout: float | None,
    device: str | None,
    fresh: bool,
    storage: str | None,
    keep_weights: int,
    force: bool,
    no_dashboard: bool,
) -> None:
    """Run (or continue) the search of SPACE.yaml: every trial is built, briefly trained, scored and recorded.

    Running it again continues the same study under RESULTS/<name>/. Ctrl-C stops cleanly (exit code 130).

    \b
    Examples:
      attnsearch run search_spaces/quickstart.yaml
      attnsearch run my_space.yaml --trials 50 --keep-weights 3 --results runs
    """
    from pathlib import Path

    from .search.log import plain_log, print_summary
    from .search.runner import RunInterrupted, run_search
    from .space import load_space

    if device is not None and not _valid_device(device):
        raise click.BadParameter("must be auto, cpu, cuda or cuda:N", param_hint="--device")
    space = load_space(space_file)
    try:
        outcome = run_search(
            space,
            results=results,
            storage=storage,
            n_trials=n_trials,
            timeout=timeout,
            device=device,
            fresh=fresh,
            keep_weights=keep_weights,
            force=force,
            space_text=Path(space_file).read_bytes(),
            on_event=plain_log(),
        )
    except RunInterrupted as stop:
        click.echo(f"attnsearch: {stop}", err=True)
        sys.exit(130)
    print_summary(outcome.summary)
    click.echo(f"Results: {outcome.folder}")


def _valid_device(device: str) -> bool:
    import re

    return re.fullmatch(r"auto|cpu|cuda|cuda:\d+", device) is not None


@main.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@json_option
def validate(space_file: str, as_json: bool) -> None:
    """Check SPACE.yaml without training: its size, slot x module table, and the range of params and FLOPs.

    \b
    Example:
      attnsearch validate search_spaces/quickstart.yaml
    """
    from .search.survey import survey_space
    from .space import load_space

    space = load_space(space_file)
    survey = survey_space(space)
    if as_json:
        _print_json(
            {
                "name": space.name,
                "size": survey.size if survey.size != float("inf") else None,
                "slots": survey.table,
                "params": list(survey.params),
                "flops": list(survey.flops),
                "violations": survey.violations,
                "examples": survey.examples,
            }
        )
        return
    ranges = "".join(f" x continuous {name}" for name in space.ranges)
    click.echo(f"{space.name}: valid. {survey.size:,} distinct candidates{ranges} on {', '.join(space.backbones)}.")
    modules = list(dict.fromkeys(m for ms in survey.table.values() for m in ms))
    rows = [[slot, *("x" if m in tried else "" for m in modules)] for slot, tried in survey.table.items()]
    _print_table("Slot x module", ["slot", *modules], rows)
    click.echo(f"params: {survey.params[0]:,} .. {survey.params[1]:,}")
    click.echo(f"FLOPs:  {survey.flops[0]:,} .. {survey.flops[1]:,}")
    limits = space.config.search.constraints
    if limits.max_params or limits.max_flops:
        if survey.violations is None:
            click.echo("constraints: the space is too large to check every candidate; the ranges above bound it")
        elif survey.violations:
            click.echo(f"constraints: {survey.violations:,} candidates break them, e.g.:")
            for example in survey.examples:
                click.echo(f"  {example}")
        else:
            click.echo("constraints: every candidate meets them")
    if limits.max_latency_ms:
        click.echo("max_latency_ms is checked per trial, on the trial's device, before training")
