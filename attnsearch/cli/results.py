"""The commands on a study's results folder: ``watch``, ``report``, ``export`` and ``replay``."""

from __future__ import annotations

from typing import Any

import click

from ._options import defaulted_option, device_option, json_option, plugin_option, results_dir_argument
from ._output import print_json, print_table

__all__ = ["export", "replay", "report", "watch"]

storage_option = click.option(
    "--storage",
    metavar="URL",
    help="The storage URL the study ran with (run --storage): show the trials of every driver that shares it.",
)


@click.command()
@results_dir_argument
@defaulted_option(
    "--interval", type=click.FloatRange(min=0.1), default=2.0, help="Seconds between two reads of the folder."
)
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@storage_option
@plugin_option
def watch(results_dir: str, interval: float, once: bool, storage: str | None) -> None:
    """Show the live dashboard of the study in RESULTS_DIR, read-only: from another terminal or machine while
    a run goes on, or on a finished study. It never writes to the study and never holds the runner up. Ctrl-C
    leaves.

    \b
    Examples:
      attnsearch watch results/vgg16-shapes-quick
      attnsearch watch results/vgg16-shapes-quick --once
      attnsearch watch results/shared --storage postgresql://me@db-host/studies
    """
    from ..dashboard.watch import watch as watch_study

    watch_study(results_dir, interval=interval, once=once, storage=storage)


@click.command()
@results_dir_argument
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for report.html, heatmap.png, history.png, summary.md  [default: RESULTS_DIR/report]",
)
@storage_option
@plugin_option
def report(results_dir: str, out: str | None, storage: str | None) -> None:
    """Summarize the study in RESULTS_DIR: leaderboard, placement map, the effect of each module against none
    at its slot (95% CI, paired where trials differ only there), parameter importances; and the same as files.

    \b
    Examples:
      attnsearch report results/vgg16-shapes-quick
      attnsearch report results/vgg16-shapes-quick --out paper/figures
      attnsearch report results/shared --storage postgresql://me@db-host/studies
    """
    from pathlib import Path

    from ..report import build_report, print_report, write_report

    from ..search.store import check_writable

    found = build_report(results_dir, storage=storage)
    folder = Path(out) if out else Path(results_dir) / "report"
    check_writable(folder)  # refused before the report is printed, not after
    print_report(found)
    written = write_report(found, folder)
    click.echo(f"Report: {written[0]}")


@click.command()
@results_dir_argument
@defaulted_option("--trial", default="best", help="A trial number, or 'best': the best complete trial.")
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
@plugin_option
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
    from ..export import export_trial, list_exportable

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
        print_table(title, ["trial", "placements", *metrics, "weights"], rows)
        return
    result = export_trial(results_dir, trial=trial, out=out, weights=weights, num_classes=num_classes, fmt=fmt)
    size = result.image_size
    click.echo(f"Trial {result.trial}: {result.code}  ({result.num_classes} classes, {size}x{size} input)")
    if result.weights is not None:
        click.echo(f"Weights: {result.weights}")
    if result.onnx is not None:
        click.echo(f"ONNX: {result.onnx}")


class _SplitSize(click.ParamType):
    """A split size: a positive integer or ``all``."""

    name = "N|all"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:  # click would upper-case the name
        return "N|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        from ..errors import AttnsearchError
        from ..replay_budget import parse_size

        try:
            return parse_size(str(value))
        except AttnsearchError:
            self.fail(f"{str(value)!r:.40} is not a positive integer or 'all'", param, ctx)


@click.command()
@results_dir_argument
@click.option(
    "--trial", "trials", type=click.IntRange(min=0), multiple=True, help="A trial number; repeat it for several."
)
@click.option("--top", type=click.IntRange(min=1), help="Also the K best complete trials.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs instead (saved under replays/).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Another batch size (saved under replays/).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Another peak learning rate (saved too).")
@click.option(
    "--train-size", type=_SplitSize(), help="Training images: a number, or 'all' for the whole training split."
)
@click.option(
    "--val-size", type=_SplitSize(), help="Validation images: a number, or 'all' for the whole validation split."
)
@click.option(
    "--test",
    is_flag=True,
    help="Also score the trained model once on the dataset's test split (shown and saved apart from val).",
)
@device_option(default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads  [default: those the search used]")
@json_option
@plugin_option
def replay(
    results_dir: str,
    trials: tuple[int, ...],
    top: int | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    train_size: int | str | None,
    val_size: int | str | None,
    test: bool,
    device: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Train trials again from their trial.json alone and compare with what was recorded.

    Without overrides the replay checks the record (on CPU the accuracy must match exactly). With --epochs,
    --batch-size, --lr, --train-size or --val-size it trains the candidate at that budget, e.g. the winner on
    the whole training set, and saves a new record under RESULTS_DIR/replays/; its val score is then not
    comparable with the search's and is not checked. --test also scores the trained model once on the test
    split, labelled apart from val (use it to report the candidate the validation scores chose, not to choose
    one). Accuracies come with their Wilson 95% interval. Three or more trials also get the Spearman and Kendall
    rank correlations of recorded vs replayed.

    \b
    Examples:
      attnsearch replay results/vgg16-shapes-quick --trial 3
      attnsearch replay results/vgg16-shapes-quick --top 5 --epochs 30
      attnsearch replay results/quickstart --top 1 --train-size all --epochs 15 --test
    """
    from ..errors import AttnsearchError
    from ..replay import ReplayNotSaved, replay_trials

    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "train_size": train_size, "val_size": val_size}
    try:
        clock = _ReplayClock()
        results = replay_trials(
            results_dir,
            trials,
            top=top,
            overrides=overrides,
            test=test,
            device=device,
            threads=threads,
            on_start=clock.start,
            on_epoch=clock.epoch,
        )
    except ReplayNotSaved as unsaved:  # what was trained is shown all the same, then the one error line
        _show_replays(unsaved.results, as_json)
        raise AttnsearchError(f"{unsaved}; its result is shown above") from None
    _show_replays(results, as_json)


class _ReplayClock:
    """Progress of a replay on stderr: a line when a trial starts and one per epoch, with the time left."""

    def __init__(self) -> None:
        self.started = 0.0

    def start(self, number: int, text: str) -> None:
        import time

        self.started = time.monotonic()
        click.echo(f"replaying trial {number}: {text}", err=True)

    def epoch(self, number: int, epoch: int, epochs: int, val_acc: float | None) -> None:
        import time

        spent = time.monotonic() - self.started
        left = spent / epoch * (epochs - epoch)
        score = f", val_acc {100 * val_acc:.2f}%" if val_acc is not None else ""
        click.echo(
            f"replaying trial {number}: epoch {epoch}/{epochs}{score} ({spent:.0f} s; about {left:.0f} s left)",
            err=True,
        )


def _show_replays(results: list[Any], as_json: bool) -> None:
    from ..replay import ranking_agreement

    metric = results[0].metric
    rho, pairs = ranking_agreement(results)
    tau, _ = ranking_agreement(results, "kendall")
    if as_json:
        print_json({"metric": metric, "spearman": rho, "kendall": tau, "trials": [r.to_dict() for r in results]})
        return
    tested = any(r.test_images for r in results)
    if len(results) == 1:
        r = results[0]
        keys = list(dict.fromkeys(["val_acc", "val_top5", "val_loss", "train_loss", metric]))
        rows = [[k, *_side_by_side(k, r)] for k in keys]
        print_table(f"Trial {r.trial}: {r.placements}", ["metric", "recorded", "replayed", "difference"], rows)
    else:
        columns = ["trial", "placements", "recorded", "replayed", "difference"]
        columns += ["test_acc [95% CI]"] if tested else []
        rows = [
            [str(r.trial), r.placements, *_side_by_side(metric, r, intervals=True)]
            + ([_accuracy_text(r, "test", cell=True)] if tested else [])
            + [_verdict(r)]
            for r in results
        ]
        print_table("Replays", [*columns, "verdict"], rows)
        if note := _interval_note(results, metric, tested):
            click.echo(note)
    if len(results) > 1:  # one trial's verdict says it itself
        for note in dict.fromkeys(_budget_note(r) for r in results if r.overrides):
            click.echo(note)
    for r in results:
        if len(results) == 1:
            click.echo(_verdict(r, long=True))
            for which, label in (("recorded", "val accuracy, recorded:"), ("replayed", "val accuracy, replayed:")):
                if r.interval(which) is not None:
                    click.echo(f"{label} {_accuracy_text(r, which)}")
            if r.test_images:
                click.echo(f"test accuracy {_accuracy_text(r, 'test')}")
        if r.saved is not None:
            click.echo(f"Trial {r.trial} replay saved: {r.saved}")
    if tested and len(results) > 1:
        click.echo("The test scores report candidates chosen on validation: picking one by them would select on test.")
    if pairs >= 3:
        value = f"{rho:.3f}" if rho is not None else "undefined (all scores equal on one side)"
        kendall = f", Kendall's tau-b {tau:.3f}" if tau is not None else ""
        click.echo(
            f"Spearman rank correlation of {metric}, recorded vs replayed, over {pairs} trials: {value}{kendall}"
        )


def _score_text(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if metric in ("val_acc", "val_top5") else f"{value:.6g}"


def _accuracy_text(r: Any, which: str, *, cell: bool = False) -> str:
    """``91.2% [90.6, 91.7] on 10000 images (Wilson 95%)``; in a table ``cell``, ``91.20% [90.6, 91.7]``."""
    interval = r.interval(which)
    if interval is None:
        return "-"
    value = r.test_acc if which == "test" else (r.recorded if which == "recorded" else r.replayed)["val_acc"]
    low, high = interval
    if cell:
        return f"{value:.2%} [{low * 100:.1f}, {high * 100:.1f}]"
    n = {"test": r.test_images, "recorded": r.recorded_images, "replayed": r.replayed_images}[which]
    return f"{value:.1%} [{low * 100:.1f}, {high * 100:.1f}] on {n} images (Wilson 95%)"


def _interval_note(results: list[Any], metric: str, tested: bool) -> str:
    def images(attribute: str) -> str:
        return " or ".join(str(n) for n in sorted({getattr(r, attribute) or 0 for r in results}) if n) or "?"

    parts = [f"val_acc on {images('recorded_images')} images recorded, {images('replayed_images')} replayed"]
    parts = (parts if metric == "val_acc" else []) + ([f"test on {images('test_images')} images"] if tested else [])
    return f"Intervals: Wilson 95%, {'; '.join(parts)}." if parts else ""


def _budget_note(r: Any) -> str:
    changed = ", ".join(f"{k} {_value(r.searched.get(k))} -> {_value(v)}" for k, v in r.overrides.items())
    return (
        f"Budget differs from the search's ({changed}): the replayed val score is not comparable with the "
        "recorded one, and no exactness check is done."
    )


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _side_by_side(metric: str, r: Any, *, intervals: bool = False) -> list[str]:
    recorded, replayed = r.recorded[metric], r.replayed[metric]
    if recorded is None or replayed is None or r.overrides:  # another budget: no difference to read
        difference = "-"
    elif metric in ("val_acc", "val_top5"):
        difference = f"{(replayed - recorded) * 100:+.2f} pp"
    else:
        difference = f"{replayed - recorded:+.6g}"
    if intervals and metric == "val_acc":
        return [_accuracy_text(r, "recorded", cell=True), _accuracy_text(r, "replayed", cell=True), difference]
    return [_score_text(metric, recorded), _score_text(metric, replayed), difference]


def _verdict(r: Any, *, long: bool = False) -> str:
    if r.state != "complete":
        return f"replay {r.state}: {r.reason}"
    if r.matches is None and long:
        return _budget_note(r)
    if r.matches is None:
        return f"new budget ({', '.join(f'{k}={_value(v)}' for k, v in r.overrides.items())})"
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
