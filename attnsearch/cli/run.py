"""``attnsearch run`` and ``attnsearch validate``: search a space, or check it without training."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ._options import defaulted_option, device_option, json_option, plugin_option
from ._output import print_json, print_table

if TYPE_CHECKING:
    from ..search.events import Event

__all__ = ["run", "validate"]


@click.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@defaulted_option(
    "--results", type=click.Path(file_okay=False), default="results", help="Folder that holds one sub-folder per study."
)
@click.option("--trials", "n_trials", type=click.IntRange(min=1), help="Override search.n_trials.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop asking for trials after S seconds.")
@device_option(help="Override execution.device: auto, cpu, cuda, cuda:N.")
@click.option("--fresh", is_flag=True, help="Start over: the old results folder is moved aside, not deleted.")
@click.option("--storage", help="Any Optuna storage URL (e.g. postgresql://...) for a study shared by several runs.")
@defaulted_option(
    "--keep-weights",
    type=click.IntRange(min=0),
    default=1,
    help="Keep model.pt of the best K trials (0: none), for export --weights.",
)
@click.option("--force", is_flag=True, help="Run a grid larger than the grid limit.")
@click.option(
    "--no-confirm",
    "confirm",
    flag_value=False,
    default=True,
    help="Skip the confirmation race (search.confirm) this time; a later run without it runs or continues it.",
)
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
@plugin_option
def run(space_file: str, no_dashboard: bool, **options: Any) -> None:
    """Run (or continue) the search of SPACE.yaml: every trial is built, briefly trained, scored and recorded.

    Running it again continues the same study under RESULTS/<name>/. Ctrl-C stops cleanly (exit code 130): the
    running trial is recorded as interrupted and the summary written; so do SIGTERM (exit 143) and SIGHUP (129),
    as a scheduler or a closed terminal sends them. A second signal stops at once.

    With search.confirm in the space, a search that reached its target is followed by the confirmation race: the
    best candidates and the baseline trained again over shared seeds, ending with its verdict (resumed like the
    search when stopped).

    \b
    Examples:
      attnsearch run search_spaces/quickstart.yaml
      attnsearch run my_space.yaml --trials 50 --keep-weights 3 --results runs
      attnsearch run my_space.yaml --plugin my_gate.py
    """
    from contextlib import nullcontext
    from pathlib import Path

    from ..search.log import plain_log, print_summary
    from ..search.runner import RunInterrupted, run_search
    from ..signals import Stopped
    from ..space import load_space

    space = load_space(space_file)
    # the live dashboard on a terminal; plain lines for CI, log files and --no-dashboard
    dashboard = None
    if not no_dashboard and sys.stdout.isatty():
        from ..dashboard.live import LiveDashboard

        dashboard = LiveDashboard()
    try:
        with dashboard if dashboard is not None else nullcontext():
            # every other option is run_search's keyword of the same name (--trials: n_trials)
            outcome = run_search(
                space,
                space_text=Path(space_file).read_bytes(),
                on_event=dashboard.on_event if dashboard is not None else _unless_gone(plain_log()),
                **options,
            )
    except RunInterrupted as stop:  # the command line says it in one line and exits 128 + the signal
        raise Stopped(stop.signum, str(stop)) from None
    print_summary(outcome.results)
    if outcome.results.confirm_records:
        from ..confirmation import describe_confirmation

        click.echo("Confirmation race (shared seeds, paired 95% intervals against the baseline):")
        for line in describe_confirmation(outcome.results.confirmation()):
            click.echo(f"  {line}")
    click.echo(f"Results: {outcome.folder}")


def _unless_gone(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """``emit``, where a terminal that is gone (EIO after a hang-up; EPIPE) drops the log and the run goes on."""
    from ..signals import drop_output

    def guarded(event: Event) -> None:
        try:
            emit(event)
        except OSError:
            drop_output()

    return guarded


@click.command()
@click.argument("space_file", metavar="SPACE.yaml", type=click.Path(dir_okay=False))
@json_option
@plugin_option
def validate(space_file: str, as_json: bool) -> None:
    """Check SPACE.yaml without training: its size, slot x module table, and the range of params and FLOPs.

    \b
    Examples:
      attnsearch validate search_spaces/quickstart.yaml
      attnsearch validate my_space.yaml --plugin my_gate.py
    """
    from ..search.survey import survey_space
    from ..space import load_space

    space = load_space(space_file)
    survey = survey_space(space)
    if as_json:
        print_json(
            {
                "name": space.name,
                "size": survey.size if survey.size != float("inf") else None,
                "slots": survey.table,
                "params": list(survey.params),
                "flops": list(survey.flops),
                "violations": survey.violations,
                "examples": survey.examples,
                "notes": survey.notes,
            }
        )
        return
    ranges = "".join(f" x continuous {name}" for name in space.ranges)
    click.echo(f"{space.name}: valid. {survey.size:,} distinct candidates{ranges} on {', '.join(space.backbones)}.")
    for note in survey.notes:
        click.echo(note)
    modules = list(dict.fromkeys(m for ms in survey.table.values() for m in ms))
    rows = [[slot, *("x" if m in tried else "" for m in modules)] for slot, tried in survey.table.items()]
    print_table("Slot x module", ["slot", *modules], rows)
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
