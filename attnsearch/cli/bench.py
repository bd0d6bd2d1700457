"""``attnsearch bench``: run one benchmark, save its figures, print them as a table (or JSON) and its verdicts.

The tables and the lines after them are the benchmarks' own (``table()`` and ``notes()`` on each result).
"""

from __future__ import annotations

from typing import Any

import click

from ._options import (
    bench_device_option,
    bench_threads_option,
    defaulted_option,
    device_option,
    json_option,
    save_option,
)
from ._output import print_json, print_table

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Benchmarks: figures measured side by side in one run (table, or --json).

    \b
    Example:
      attnsearch bench executor --json
    """


def _bench_output(name: str, result: Any, as_json: bool, save: bool, out: str | None = None) -> None:
    """Save a benchmark's figures (noted on stderr) under ``out`` (default results/benchmarks), then print them:
    JSON when --json asks, else table and notes.

    Figures measured on a GPU go to ``<name>-cuda.json``, beside the CPU's ``<name>.json``.
    """
    from ..bench import save_json

    data = result.to_dict()
    if str(data.get("config", {}).get("device", "cpu")).startswith("cuda"):
        name = f"{name}-cuda"
    if save:
        saved = save_json(name, data) if out is None else save_json(name, data, out)
        click.echo(f"saved {saved}", err=True)
    if as_json:
        print_json(data)
        return
    print_table(*result.table())
    for line in result.notes():
        click.echo(line)


@bench.command("executor")
@defaulted_option("--trials", type=click.IntRange(min=2), default=12, help="Trials per executor.")
@defaulted_option("--steps", type=click.IntRange(min=1), default=6, help="Optimizer steps per trial.")
@json_option
def bench_executor_command(trials: int, steps: int, as_json: bool) -> None:
    """Scheduling overhead and efficiency: local executor, and Ray with 1 and 2 workers, on the same trials."""
    from dataclasses import asdict

    from ..bench import bench_executor
    from ..bench.executor import executor_table

    results = bench_executor(trials=trials, steps=steps)
    if as_json:
        print_json([asdict(r) for r in results])
        return
    print_table(*executor_table(results))


@bench.command("trainer")
@defaulted_option("--backbone", default="vgg16_bn", help="The model's backbone.")
@defaulted_option("--width", type=click.FloatRange(min=0, min_open=True), default=0.25)
@defaulted_option("--batch-size", type=click.IntRange(min=1), default=64)
@defaulted_option("--steps", type=click.IntRange(min=1), default=20, help="Steps per round.")
@defaulted_option("--rounds", type=click.IntRange(min=1), default=15, help="Alternating rounds.")
@defaulted_option("--workers", type=click.IntRange(min=0), default=2, help="DataLoader worker processes.")
@bench_threads_option
@bench_device_option
@save_option
@json_option
def bench_trainer_command(save: bool, as_json: bool, **options: Any) -> None:
    """Images per second of train_model against a hand-written loop, and against a DataLoader pipeline.

    Same model and initial weights, data, batch size, optimizer, precision and threads, in one process; rounds
    alternate between the two sides and each figure is the median over rounds (the first round warms up).

    \b
    Examples:
      attnsearch bench trainer
      attnsearch bench trainer --steps 10 --rounds 3 --json
    """
    from ..bench import bench_trainer

    _bench_output("trainer", bench_trainer(**options), as_json, save)


@bench.command("overhead")
@defaulted_option(
    "--space",
    "space_file",
    default="search_spaces/quickstart.yaml",
    type=click.Path(dir_okay=False),
    help="The space whose trials are measured.",
)
@defaulted_option("--trials", type=click.IntRange(min=1), default=3)
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--train-size", type=click.IntRange(min=1), help="Override data.train_size.")
@click.option("--val-size", type=click.IntRange(min=1), help="Override data.val_size.")
@bench_threads_option
@bench_device_option
@save_option
@json_option
def bench_overhead_command(save: bool, as_json: bool, **options: Any) -> None:
    """Fixed cost per trial (ask, build, costs, warm-up, evaluation, tell, records, dashboard) against training.

    The trials run through the runner's and the worker's own functions on a real study in a temporary folder;
    each figure is the median over the trials.

    \b
    Examples:
      attnsearch bench overhead
      attnsearch bench overhead --epochs 2 --train-size 1000 --json
    """
    from ..bench import bench_overhead

    _bench_output("overhead", bench_overhead(**options), as_json, save)


@bench.command("search")
@click.option("--quick", is_flag=True, help="A 4-candidate grid, seconds to train (smoke tests).")
@defaulted_option("--seeds", type=click.IntRange(min=1), default=20, help="Searches replayed per method.")
@defaulted_option(
    "--grid-seeds",
    type=click.IntRange(min=1),
    default=3,
    help="Training seeds of the grid; the ground truth is their mean (seed 0 is the first grid cached).",
)
@click.option(
    "--n-trials",
    type=click.IntRange(min=1),
    help="The planned trials a simulated run is told (TPE's start-up)  [default: a quarter of the grid]",
)
@bench_threads_option
@save_option
@json_option
def bench_search_command(
    quick: bool, seeds: int, grid_seeds: int, n_trials: int | None, threads: int | None, save: bool, as_json: bool
) -> None:
    """Search efficiency on a grid small enough to train in full: regret per compute budget, TPE vs random.

    The grid is trained once per training seed and cached in results/benchmarks/search_grid.json (after every
    candidate: an interrupted training resumes where it stopped); searches replay one seed's curves with
    Optuna's samplers and pruner as a run configures them, and are judged on the seed-mean. Compute counts
    epochs trained.

    \b
    Examples:
      attnsearch bench search
      attnsearch bench search --quick --seeds 3 --json
    """
    from ..bench import bench_search

    def progress(step: Any) -> None:
        click.echo(
            f"grid, training seed {step.seed} ({step.seed + 1}/{step.seeds}), {step.done}/{step.total}: "
            f"{step.point.placements}  "
            f"val_acc {step.point.curve[-1]:.2%}  ({step.point.seconds:.1f} s; ETA {_duration(step.eta_seconds)})",
            err=True,
        )

    result = bench_search(
        quick=quick, seeds=seeds, grid_seeds=grid_seeds, n_trials=n_trials, threads=threads, on_progress=progress
    )
    _bench_output("search_quick" if quick else "search", result, as_json, save)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@bench.command("memory")
@defaulted_option("--sizes", default="16,32,48,64,96,128", help="Feature-map sizes H = W, comma-separated.")
@defaulted_option("--batch-size", type=click.IntRange(min=1), default=4)
@defaulted_option("--channels", type=click.IntRange(min=1), default=64)
@defaulted_option(
    "--max-gib",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
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
    from ..bench import bench_memory

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
    _bench_output("memory", result, as_json, save)


@bench.command("fidelity")
@defaulted_option("--root", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST's four *-ubyte files.")
@defaulted_option("--out", default="results/benchmarks", type=click.Path(file_okay=False), help="Figures and cache.")
@click.option("--quick", is_flag=True, help="4 placements on a few hundred images: minutes, for a check by hand.")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), help="Backbone width  [default: 0.25]")
@click.option("--brief-epochs", type=click.IntRange(min=1), help="[default: 3]")
@click.option("--train-size", type=click.IntRange(min=1), help="Brief budget's training images  [default: 3000]")
@click.option("--long-epochs", type=click.IntRange(min=1), help="[default: 3]")
@click.option("--long-train-size", type=click.IntRange(min=1), help="[default: 12000]")
@click.option("--val-size", type=click.IntRange(min=1), help="[default: 2000]")
@click.option("--seeds", type=click.IntRange(min=2), help="Seeds per placement and budget  [default: 3]")
@device_option(default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads  [default: 1 on a CPU, torch's on a GPU]")
@save_option
@json_option
def bench_fidelity_command(root: str, out: str, quick: bool, save: bool, as_json: bool, **options: Any) -> None:
    """Does a search trial's brief budget rank placements as a 4x longer training does? (Fashion-MNIST)

    16 placements (none, se, eca, cbam after VGG11-BN's blocks 3 and 4, width 0.25) trained at the brief budget
    (3 epochs x 3000 images) and the long one (3 epochs x 12000), 3 seeds each: 96 trainings. Expected time on a
    2-core CPU, one thread: about 40 minutes idle, 65 with the cores shared by other work (measured: 12 s per brief
    and 68 s per long training at load 4 to 7). Each training is cached in OUT/fidelity_runs.json as it finishes: a run
    stopped with Ctrl-C resumes where it stopped. Figures go to OUT/fidelity.json (--quick: fidelity_quick.json).

    \b
    Examples:
      attnsearch bench fidelity
      attnsearch bench fidelity --quick --root ~/data/fashion-mnist
      attnsearch bench fidelity --device cuda --width 1 --long-epochs 10 --seeds 5
    """
    from dataclasses import replace
    from pathlib import Path

    from ..bench.fidelity import FIDELITY_CACHE, QUICK, FidelityConfig, bench_fidelity, check_fidelity

    given = {k: v for k, v in options.items() if v is not None}
    config = replace(QUICK if quick else FidelityConfig(), root=root, **given)
    check_fidelity(config)  # a bad grid or missing files: one line, before anything is printed
    total = len(config.grid()) * 2 * config.seeds
    cache = Path(out) / FIDELITY_CACHE
    click.echo(f"fidelity: {total} trainings, each cached in {cache} as it finishes", err=True)
    done = 0

    def progress(p: Any) -> None:
        nonlocal done
        done = p.done
        eta = "" if p.eta_seconds is None else f"; ETA {p.eta_seconds / 60:.0f} min"
        click.echo(
            f"[{p.done}/{p.to_train}] {p.budget} seed {p.seed} {p.placement}: val_acc {p.val_acc:.2%} "
            f"({p.seconds:.0f} s){eta}",
            err=True,
        )

    try:
        result = bench_fidelity(config, out=out, on_progress=progress)
    except KeyboardInterrupt:
        click.echo(f"fidelity: stopped; {done} trainings of this run saved in {cache}: run again to resume", err=True)
        raise
    _bench_output("fidelity_quick" if quick else "fidelity", result, as_json, save, out)
