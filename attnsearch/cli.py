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
    from contextlib import nullcontext
    from pathlib import Path

    from .search.log import plain_log, print_summary
    from .search.runner import RunInterrupted, run_search
    from .space import load_space

    if device is not None and not _valid_device(device):
        raise click.BadParameter("must be auto, cpu, cuda or cuda:N", param_hint="--device")
    space = load_space(space_file)
    # the live dashboard on a terminal; plain lines for CI, log files and --no-dashboard
    dashboard = None
    if not no_dashboard and sys.stdout.isatty():
        from .dashboard.live import LiveDashboard

        dashboard = LiveDashboard()
    try:
        with dashboard if dashboard is not None else nullcontext():
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
                on_event=dashboard.on_event if dashboard is not None else plain_log(),
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


results_dir_argument = click.argument("results_dir", metavar="RESULTS_DIR", type=click.Path(file_okay=False))


@main.command()
@results_dir_argument
@click.option("--trial", default="best", show_default=True, help="A trial number, or 'best': the best complete trial.")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    help="The .py file to write  [default: RESULTS_DIR/exports/trial_<n>.py]",
)
@click.option("--weights", is_flag=True, help="Also write the trained state_dict next to it (FILE.pt).")
@click.option(
    "--num-classes", type=click.IntRange(min=1), help="Outputs of build_model()  [default: the trained classes]"
)
@click.option(
    "--format", "fmt", type=click.Choice(["onnx"]), help='Also write FILE.onnx (pip install "attnsearch[onnx]").'
)
@click.option("--list", "show_list", is_flag=True, help="List the trials to choose from, then stop.")
def export(
    results_dir: str,
    trial: str,
    out: str | None,
    weights: bool,
    num_classes: int | None,
    fmt: str | None,
    show_list: bool,
) -> None:
    """Write a trial as one standalone PyTorch file: its attention modules, its backbone, build_model().

    The file imports only torch. With several objectives, pick a Pareto trial with --trial (see them with --list).

    \b
    Examples:
      attnsearch export results/vgg16-shapes-quick --weights
      attnsearch export results/my-study --trial 7 -o model.py --weights --format onnx
      attnsearch export results/my-study --list
    """
    from .export import export_trial, list_exportable

    if show_list:
        found = list_exportable(results_dir)
        metrics = [f"{metric} ({direction[:3]})" for metric, direction in found.objectives]
        rows = [
            [
                str(t.number),
                t.placements,
                *(_score_text(m, t.scores[m]) for m, _ in found.objectives),
                "yes" if t.weights else "-",
            ]
            for t in found.trials
        ]
        title = "Pareto trials" if found.pareto else "Complete trials, best first"
        _print_table(title, ["trial", "placements", *metrics, "weights"], rows)
        return
    result = export_trial(results_dir, trial=trial, out=out, weights=weights, num_classes=num_classes, fmt=fmt)
    size = result.image_size
    click.echo(f"Trial {result.trial}: {result.code}  ({result.num_classes} classes, {size}x{size} input)")
    if result.weights is not None:
        click.echo(f"Weights: {result.weights}")
    if result.onnx is not None:
        click.echo(f"ONNX: {result.onnx}")


@main.command()
@results_dir_argument
@click.option(
    "--trial", "trials", type=click.IntRange(min=0), multiple=True, help="A trial number; repeat it for several."
)
@click.option("--top", type=click.IntRange(min=1), help="Also the K best complete trials.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs instead (saved under replays/).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Another batch size (saved under replays/).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Another peak learning rate (saved too).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads  [default: those the search used]")
@json_option
def replay(
    results_dir: str,
    trials: tuple[int, ...],
    top: int | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Train trials again from their trial.json alone and compare with what was recorded.

    Without overrides the replay checks the record (on CPU the accuracy must match exactly). With --epochs,
    --batch-size or --lr it trains the candidate with that recipe and saves a new record under
    RESULTS_DIR/replays/. Three or more trials also get the Spearman rank correlation of recorded vs replayed.

    \b
    Examples:
      attnsearch replay results/vgg16-shapes-quick --trial 3
      attnsearch replay results/vgg16-shapes-quick --top 5 --epochs 30
    """
    from .replay import ranking_agreement, replay_trials

    if not _valid_device(device):
        raise click.BadParameter("must be auto, cpu, cuda or cuda:N", param_hint="--device")
    results = replay_trials(
        results_dir,
        trials,
        top=top,
        overrides={"epochs": epochs, "batch_size": batch_size, "lr": lr},
        device=device,
        threads=threads,
        on_start=lambda number, text: click.echo(f"replaying trial {number}: {text}", err=True),
    )
    metric = results[0].metric
    rho, pairs = ranking_agreement(results)
    if as_json:
        _print_json({"metric": metric, "spearman": rho, "trials": [r.to_dict() for r in results]})
        return
    if len(results) == 1:
        r = results[0]
        keys = list(dict.fromkeys(["val_acc", "val_top5", "val_loss", "train_loss", metric]))
        rows = [[k, *_side_by_side(k, r.recorded[k], r.replayed[k])] for k in keys]
        _print_table(f"Trial {r.trial}: {r.placements}", ["metric", "recorded", "replayed", "difference"], rows)
    else:
        rows = [
            [str(r.trial), r.placements, *_side_by_side(metric, r.recorded[metric], r.replayed[metric]), _verdict(r)]
            for r in results
        ]
        _print_table("Replays", ["trial", "placements", "recorded", "replayed", "difference", "verdict"], rows)
    for r in results:
        if len(results) == 1:
            click.echo(_verdict(r, long=True))
        if r.saved is not None:
            click.echo(f"Trial {r.trial} replay saved: {r.saved}")
    if pairs >= 3:
        value = f"{rho:.3f}" if rho is not None else "undefined (all scores equal on one side)"
        click.echo(f"Spearman rank correlation of {metric}, recorded vs replayed, over {pairs} trials: {value}")


def _score_text(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if metric in ("val_acc", "val_top5") else f"{value:.6g}"


def _side_by_side(metric: str, recorded: float | None, replayed: float | None) -> list[str]:
    if recorded is None or replayed is None:
        difference = "-"
    elif metric in ("val_acc", "val_top5"):
        difference = f"{(replayed - recorded) * 100:+.2f} pp"
    else:
        difference = f"{replayed - recorded:+.6g}"
    return [_score_text(metric, recorded), _score_text(metric, replayed), difference]


def _verdict(r: Any, *, long: bool = False) -> str:
    if r.state != "complete":
        return f"replay {r.state}: {r.reason}"
    if r.matches is None:
        return f"new recipe ({', '.join(f'{k}={v:g}' for k, v in r.overrides.items())})"
    if r.tolerance == 0:
        short = "exactly" if r.matches else "no"
        where = f"{r.device}, {r.threads or 'default'} thread(s): the CPU trainer is deterministic"
    else:
        short = "within tolerance" if r.matches else "no"
        where = f"{r.device}, tolerance {r.tolerance * 100:g} pp: its kernels are not bit-reproducible"
    if not long:
        return short + {True: ", same weights", False: ", other weights", None: ""}[r.weights_equal]
    weights = {True: "; weights identical to model.pt", False: "; weights differ from model.pt", None: ""}
    verdict = f"reproduced {short}" if r.matches else "NOT reproduced"
    return f"val_acc {verdict} ({where}){weights[r.weights_equal]}"


@main.group()
def bench() -> None:
    """Benchmarks: figures measured side by side in one run (table, or --json).

    \b
    Example:
      attnsearch bench executor --json
    """


@bench.command("executor")
@click.option("--trials", type=click.IntRange(min=2), default=12, show_default=True, help="Trials per executor.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True, help="Optimizer steps per trial.")
@json_option
def bench_executor_command(trials: int, steps: int, as_json: bool) -> None:
    """Scheduling overhead and efficiency: local executor, and Ray with 1 and 2 workers, on the same trials."""
    from dataclasses import asdict

    from .bench import bench_executor

    results = bench_executor(trials=trials, steps=steps)
    if as_json:
        _print_json([asdict(r) for r in results])
        return
    rows = [
        [
            r.executor,
            str(r.workers),
            str(r.trials),
            f"{r.wall_seconds:.2f}",
            f"{r.work_seconds:.2f}",
            f"{r.overhead_per_trial * 1000:.0f}",
            f"{r.efficiency:.2f}",
        ]
        for r in results
    ]
    _print_table(
        "Executors, the same trials each",
        ["executor", "workers", "trials", "wall s", "work s", "overhead ms/trial", "efficiency"],
        rows,
    )


@main.command()
@results_dir_argument
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between two reads of the folder.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
def watch(results_dir: str, interval: float, once: bool) -> None:
    """Show the live dashboard of the study in RESULTS_DIR, read-only: from another terminal or machine while
    a run goes on, or on a finished study. It never writes to the study and never holds the runner up. Ctrl-C
    leaves.

    \b
    Examples:
      attnsearch watch results/vgg16-shapes-quick
      attnsearch watch results/vgg16-shapes-quick --once
    """
    from .dashboard.watch import watch as watch_study

    watch_study(results_dir, interval=interval, once=once)


@main.command()
@results_dir_argument
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for report.html, heatmap.png, history.png, summary.md  [default: RESULTS_DIR/report]",
)
def report(results_dir: str, out: str | None) -> None:
    """Summarize the study in RESULTS_DIR: leaderboard, placement map, the effect of each module against none
    at its slot (95% CI, paired where trials differ only there), parameter importances; and the same as files.

    \b
    Examples:
      attnsearch report results/vgg16-shapes-quick
      attnsearch report results/vgg16-shapes-quick --out paper/figures
    """
    from pathlib import Path

    from .report import build_report, print_report, write_report

    found = build_report(results_dir)
    print_report(found)
    written = write_report(found, Path(out) if out else Path(results_dir) / "report")
    click.echo(f"Report: {written[0]}")


# ------------------------------------------------------------------------------------------------ bench: the rest

save_option = click.option(
    "--save/--no-save", default=True, show_default=True, help="Write the raw figures to results/benchmarks/."
)
bench_device_option = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
bench_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), help="Torch threads  [default: torch's, all cores]"
)


def _bench_output(name: str, result: Any, as_json: bool, save: bool) -> bool:
    """Save a benchmark's figures (noted on stderr); print them as JSON and return True when --json asks.

    Figures measured on a GPU go to ``<name>-cuda.json``, beside the CPU's ``<name>.json``.
    """
    from .bench import save_json

    data = result.to_dict()
    if str(data.get("config", {}).get("device", "cpu")).startswith("cuda"):
        name = f"{name}-cuda"
    if save:
        click.echo(f"saved {save_json(name, data)}", err=True)
    if as_json:
        _print_json(data)
    return as_json


def _check_bench_device(device: str) -> None:
    if device == "auto" or not _valid_device(device):
        raise click.BadParameter("must be cpu, cuda or cuda:N", param_hint="--device")


@bench.command("trainer")
@click.option("--backbone", default="vgg16_bn", show_default=True, help="The model's backbone.")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="Steps per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=15, show_default=True, help="Alternating rounds.")
@click.option(
    "--workers", type=click.IntRange(min=0), default=2, show_default=True, help="DataLoader worker processes."
)
@bench_threads_option
@bench_device_option
@save_option
@json_option
def bench_trainer_command(
    backbone: str,
    width: float,
    batch_size: int,
    steps: int,
    rounds: int,
    workers: int,
    threads: int | None,
    device: str,
    save: bool,
    as_json: bool,
) -> None:
    """Images per second of train_model against a hand-written loop, and against a DataLoader pipeline.

    Same model and initial weights, data, batch size, optimizer, precision and threads, in one process; rounds
    alternate between the two sides and each figure is the median over rounds (the first round warms up).

    \b
    Examples:
      attnsearch bench trainer
      attnsearch bench trainer --steps 10 --rounds 3 --json
    """
    from .bench import bench_trainer

    _check_bench_device(device)
    result = bench_trainer(
        backbone=backbone,
        width=width,
        batch_size=batch_size,
        steps=steps,
        rounds=rounds,
        workers=workers,
        threads=threads,
        device=device,
    )
    if _bench_output("trainer", result, as_json, save):
        return
    c = result.config
    rows = [
        [
            r.ours,
            r.baseline,
            f"{r.ours_images_per_second:,.0f}",
            f"{r.baseline_images_per_second:,.0f}",
            f"{r.ratio:.3f}",
        ]
        for r in result.comparisons
    ]
    _print_table(
        f"Trainer: {c['backbone']} x{c['width']:g}, batch {c['batch_size']}, {c['steps_per_round']} steps x "
        f"{c['rounds']} rounds, {c['threads']} threads, {c['device']} {c['precision']}; DataLoader "
        f"{c['dataloader']['num_workers']} workers",
        ["ours", "baseline", "ours img/s", "baseline img/s", "ratio"],
        rows,
    )


@bench.command("overhead")
@click.option(
    "--space",
    "space_file",
    default="search_spaces/quickstart.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The space whose trials are measured.",
)
@click.option("--trials", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--train-size", type=click.IntRange(min=1), help="Override data.train_size.")
@click.option("--val-size", type=click.IntRange(min=1), help="Override data.val_size.")
@bench_threads_option
@bench_device_option
@save_option
@json_option
def bench_overhead_command(
    space_file: str,
    trials: int,
    epochs: int | None,
    train_size: int | None,
    val_size: int | None,
    threads: int | None,
    device: str,
    save: bool,
    as_json: bool,
) -> None:
    """Fixed cost per trial (ask, build, costs, warm-up, evaluation, tell, records, dashboard) against training.

    The trials run through the runner's and the worker's own functions on a real study in a temporary folder;
    each figure is the median over the trials.

    \b
    Examples:
      attnsearch bench overhead
      attnsearch bench overhead --epochs 2 --train-size 1000 --json
    """
    from .bench import bench_overhead
    from .bench.overhead import SCORE_PART

    _check_bench_device(device)
    result = bench_overhead(
        space_file=space_file,
        trials=trials,
        epochs=epochs,
        train_size=train_size,
        val_size=val_size,
        threads=threads,
        device=device,
    )
    if _bench_output("overhead", result, as_json, save):
        return
    trial = result.fixed_ms + result.training_ms
    rows = [[p.part, f"{p.milliseconds:,.1f}", f"{p.milliseconds / trial:.2%}"] for p in result.parts]
    rows.append(["fixed, in all", f"{result.fixed_ms:,.1f}", f"{result.fixed_share:.2%}"])
    rows.append([f"training steps ({result.steps})", f"{result.training_ms:,.1f}", f"{result.training_ms / trial:.2%}"])
    c = result.config
    _print_table(
        f"Overhead per trial: {c['space']}, {c['epochs']} epochs of {c['train_size']} images, {c['val_size']} "
        f"validation images, median of {c['trials']} trials",
        ["part", "ms", "share of the trial"],
        rows,
    )
    goal = c["goal"]
    score = next(p.milliseconds for p in result.parts if p.part == SCORE_PART)
    for label, share, ms in (
        ("fixed, every evaluation counted", result.fixed_share, result.fixed_ms),  # the goal as the issue sets it
        # the pass that scores the trial is its measurement: the figure without it, for comparison
        ("fixed, the score's pass counted as work", result.fixed_share_score_as_work, result.fixed_ms - score),
    ):
        met = share < goal["share"] and ms < goal["milliseconds"]
        click.echo(
            f"{label}: {ms:,.0f} ms = {share:.2%} of the trial; goal under {goal['share']:.0%} and "
            f"{goal['milliseconds']:,.0f} ms: {'met' if met else 'not met'}"
        )
    click.echo(f"without any evaluation: {result.fixed_share_without_eval:.2%}")


@bench.command("search")
@click.option("--quick", is_flag=True, help="A 4-candidate grid, seconds to train (smoke tests).")
@click.option("--seeds", type=click.IntRange(min=1), default=20, show_default=True, help="Searches per method.")
@click.option(
    "--n-trials",
    type=click.IntRange(min=1),
    help="The planned trials a simulated run is told (TPE's start-up)  [default: a quarter of the grid]",
)
@bench_threads_option
@save_option
@json_option
def bench_search_command(
    quick: bool, seeds: int, n_trials: int | None, threads: int | None, save: bool, as_json: bool
) -> None:
    """Search efficiency on a grid small enough to train in full: regret per compute budget, TPE vs random.

    The grid is trained once and cached in results/benchmarks/search_grid.json; searches replay it with
    Optuna's samplers and pruner as a run configures them. Compute counts epochs trained.

    \b
    Examples:
      attnsearch bench search
      attnsearch bench search --quick --seeds 3 --json
    """
    from .bench import bench_search

    def progress(done: int, total: int, point: Any) -> None:
        click.echo(
            f"grid {done}/{total}: {point.placements}  val_acc {point.curve[-1]:.2%}  ({point.seconds:.1f} s)",
            err=True,
        )

    result = bench_search(quick=quick, seeds=seeds, n_trials=n_trials, threads=threads, on_progress=progress)
    if _bench_output("search_quick" if quick else "search", result, as_json, save):
        return
    g = result.grid
    budgets = list(result.methods[0].regret)
    rows = [
        [
            m.method,
            *(_points(m.regret[b]) for b in budgets),
            _compute_text(m.compute_to_target, m.compute_to_target_share),
            f"{m.reached}/{m.seeds}",
        ]
        for m in result.methods
    ]
    _print_table(
        f"Search: {g['candidates']} candidates x {g['epochs']} epochs = {g['compute']} epochs of compute; best "
        f"val_acc {g['best_val_acc']:.2%} ({g['best_candidate']}), {g['within_target']} within "
        f"{result.config['target_points']} points; median of {result.config['seeds']} seeds",
        [
            "method",
            *(f"regret @{b}" for b in budgets),
            f"compute to within {result.config['target_points']} pt",
            "seeds that got there",
        ],
        rows,
    )
    cached = "read from the cache" if g["cached"] else "trained now"
    click.echo(f"grid {cached} ({g['seconds']:.0f} s to train); regret in accuracy points, '-': nothing found yet")
    correlations = ", ".join("-" if r is None else f"{r:.2f}" for r in g["epoch_final_correlation"])
    click.echo(f"each epoch's score against the final one over the grid (what pruning relies on): r = {correlations}")


def _points(value: float) -> str:
    import math

    return f"{value:.2f}" if math.isfinite(value) else "-"


def _compute_text(epochs: float, share: float) -> str:
    import math

    return f"{epochs:.0f} epochs ({share:.0%})" if math.isfinite(epochs) else "not reached"


@bench.command("memory")
@click.option(
    "--sizes", default="16,32,48,64,96,128", show_default=True, help="Feature-map sizes H = W, comma-separated."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--channels", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--max-gib",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Skip the naive version where its attention matrices would pass this.",
)
@bench_threads_option
@bench_device_option
@save_option
@json_option
def bench_memory_command(
    sizes: str,
    batch_size: int,
    channels: int,
    max_gib: float,
    threads: int | None,
    device: str,
    save: bool,
    as_json: bool,
) -> None:
    """Training-step memory and time of self_attention, a naive bmm-softmax version and linear_attention.

    Memory is the bytes autograd saves for backward (and the allocator's peak on CUDA), as maps grow.

    \b
    Examples:
      attnsearch bench memory
      attnsearch bench memory --sizes 16,32,64 --batch-size 2 --json
    """
    from .bench import bench_memory

    _check_bench_device(device)
    try:
        size_list = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers, e.g. 16,32,64", param_hint="--sizes") from None
    if not size_list or min(size_list) < 1:
        raise click.BadParameter("sizes must be positive", param_hint="--sizes")
    result = bench_memory(
        sizes=size_list,
        batch_size=batch_size,
        channels=channels,
        max_attention_bytes=max_gib * 2**30,
        threads=threads,
        device=device,
    )
    if _bench_output("memory", result, as_json, save):
        return
    by_key = {(r.module, r.size): r for r in result.rows}
    modules = list(dict.fromkeys(r.module for r in result.rows))
    rows = []
    for size in size_list:
        row = [f"{size}x{size}", f"{size * size:,}"]
        for module in modules:
            r = by_key[(module, size)]
            measured = r.saved_bytes is not None
            row += [f"{r.saved_bytes / 2**20:,.1f}" if measured else "-", f"{r.step_ms:,.1f}" if measured else "-"]
        rows.append(row)
    c = result.config
    _print_table(
        f"Attention memory: batch {c['batch_size']}, C={c['channels']}, {c['device']} {c['dtype']}; MiB saved "
        "for backward, ms per forward + backward",
        ["map", "positions", *(f"{m} {unit}" for m in modules for unit in ("MiB", "ms"))],
        rows,
    )
    for r in result.rows:
        if r.skipped:
            click.echo(f"{r.module} at {r.size}x{r.size} skipped: {r.skipped}")
