"""``attnsearch bench fidelity``: does a search trial's brief budget rank placements as a longer training does?

A grid of placements on one backbone (every combination of ``modules`` at ``slots``: by default none, se, eca and
cbam after VGG11-BN's blocks 3 and 4, 16 placements) is trained on Fashion-MNIST at two budgets: the **brief**
one of a search trial (3 epochs on 3000 training images) and a **long** one at least 4 times bigger (epochs x
training images), each with the same seeds (0, 1, ...). A seed fixes the backbone's initial weights (the
placed modules are built after it), the batch order and the augmentation, so the placements of one seed differ
only by what was placed and the differences between them are paired. Every training is scored on the same
validation images, held out of the training split (the test split is never read).

Each training is cached in ``<out>/fidelity_runs.json`` as it finishes (keyed by everything that decides its
score: candidate, recipe, data, seed, torch version and device type), so an interrupted run resumes where it
stopped and a finished one is read back at no cost. The figures (:mod:`attnsearch.bench.fidelity_stats`):
Spearman and Kendall correlation of the brief and long seed-means with p-values and bootstrap intervals,
top-1 and top-3 agreement against chance, the same correlations between two seeds at one budget (the noise
ceiling: no budget can agree with another better than with itself), the leader's lead over the runner-up with
its paired interval, and the seeds a paired t-test needs to separate a 0.5- and a 1-point effect at each budget.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from ..errors import AttnsearchError
from .fidelity_stats import analyse
from .fidelity_text import METHOD, describe_figures, label, placement_table
from .output import BENCH_FOLDER, load_average

__all__ = [
    "DEFAULT_ROOT",
    "FIDELITY_CACHE",
    "QUICK",
    "FidelityBench",
    "FidelityConfig",
    "Progress",
    "bench_fidelity",
    "check_fidelity",
    "label",
]

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FIDELITY_CACHE = "fidelity_runs.json"
MIN_RATIO = 4.0  # the long budget is at least this many times the brief one
# One thread by default on a CPU: on the 2-core machine, shared with other processes (load 5 to 6), a brief
# training took 14 to 16 s with one thread and 158 to 176 s with two (threads waiting on each other); even at
# load 1.5 to 2, two threads took 24 s for what one thread does with 10 s of CPU.
CPU_THREADS = 1


@dataclass(frozen=True)
class FidelityConfig:
    """What ``bench fidelity`` trains: the grid (``modules`` at each of ``slots``), the two budgets, the seeds.

    A budget is epochs x training images; both score the same ``val_size`` validation images. The recipe is a
    search trial's on a CPU (AdamW, cosine schedule, crop and flip).

    Example:
        >>> config = FidelityConfig(modules=("none", "se"), slots=("block3", "block4"))
        >>> config.grid()[:2]
        [{'block3': 'none', 'block4': 'none'}, {'block3': 'none', 'block4': 'se'}]
        >>> config.ratio()
        4.0
    """

    root: str = DEFAULT_ROOT
    backbone: str = "vgg11_bn"
    width: float = 0.25
    image_size: int = 32
    slots: tuple[str, ...] = ("block3", "block4")
    modules: tuple[str, ...] = ("none", "se", "eca", "cbam")
    seeds: int = 3
    brief_epochs: int = 3
    train_size: int = 3000
    long_epochs: int = 3
    long_train_size: int = 12000
    val_size: int = 2000
    batch_size: int = 64
    lr: float = 0.003
    device: str = "auto"
    threads: int | None = None  # torch's CPU threads; None: 1 on a CPU (see CPU_THREADS), torch's own on a GPU

    def grid(self) -> list[dict[str, str]]:
        """Every combination of ``modules`` at ``slots``: slot -> module, ``none`` included."""
        return [dict(zip(self.slots, combo, strict=True)) for combo in product(self.modules, repeat=len(self.slots))]

    def budgets(self) -> dict[str, tuple[int, int]]:
        """``{"brief": (epochs, train_size), "long": (epochs, train_size)}``."""
        return {"brief": (self.brief_epochs, self.train_size), "long": (self.long_epochs, self.long_train_size)}

    def ratio(self) -> float:
        """The long budget over the brief one, in epochs x training images (as asked for; see the loaded sizes)."""
        return self.long_epochs * self.long_train_size / (self.brief_epochs * self.train_size)

    def check(self) -> None:
        """One-line AttnsearchError for a grid or budget the benchmark cannot judge (unknown slot or module, too
        few placements or seeds, a long budget under 4 times the brief one); nothing is loaded."""
        from ..model import list_slots, normalize_placements

        if len(set(self.slots)) != len(self.slots) or len(set(self.modules)) != len(self.modules):
            raise AttnsearchError("bench fidelity: a slot or module is named twice")
        slots = list_slots(self.backbone, image_size=self.image_size, width=self.width)
        for module in self.modules:
            normalize_placements(self.backbone, {slot: module for slot in self.slots}, slots)
        if len(self.grid()) < 4:
            raise AttnsearchError(f"bench fidelity needs 4 or more placements for a top 3, got {len(self.grid())}")
        if self.seeds < 2:
            raise AttnsearchError("bench fidelity needs 2 or more seeds (the noise ceiling compares two)")
        if self.ratio() < MIN_RATIO:
            raise AttnsearchError(
                f"the long budget must be at least {MIN_RATIO:g} times the brief one (epochs x training images), "
                f"got {self.ratio():.2f}"
            )

    def data(self, budget: str) -> Any:
        from ..candidate import DataSpec

        return DataSpec(
            dataset="fashion_mnist",
            root=self.root,
            image_size=self.image_size,
            train_size=self.budgets()[budget][1],
            val_size=self.val_size,
        )

    def candidate(self, placement: dict[str, str], budget: str, seed: int) -> Any:
        from ..candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe

        recipe = TrainRecipe(
            epochs=self.budgets()[budget][0],
            batch_size=self.batch_size,
            optimizer="adamw",
            lr=self.lr,
            weight_decay=0.05,
            label_smoothing=0.1,
            augment=("crop", "flip"),
        )
        placed = tuple(PlacementSpec(slot, module) for slot, module in placement.items() if module != "none")
        return Candidate(BackboneSpec(self.backbone, self.width, "compact"), placed, recipe, self.data(budget), seed)


# seconds, not minutes: the tests' and a by-hand check's settings
QUICK = FidelityConfig(
    seeds=2,
    width=0.125,
    modules=("none", "se"),
    brief_epochs=1,
    train_size=256,
    long_epochs=2,
    long_train_size=512,
    val_size=256,
)


@dataclass(frozen=True)
class Progress:
    """One finished training, as the progress line shows it."""

    done: int  # trainings finished in this run, this one included
    to_train: int  # trainings this run has to do (the cached ones not counted)
    budget: str
    seed: int
    placement: str
    val_acc: float  # 0..1
    seconds: float
    eta_seconds: float | None  # the rest of this run at the pace so far (None: nothing left)


@dataclass
class FidelityBench:
    """Every training's score and the figures drawn from them (:func:`~attnsearch.bench.fidelity_stats.analyse`).

    ``placements``: one entry per placement, with per budget its seed-mean ``val_acc``, each seed's and each
    training's seconds. Accuracies are 0..1, differences and standard deviations accuracy points.
    """

    config: dict[str, Any]
    placements: list[dict[str, Any]]
    figures: dict[str, Any]
    timing: dict[str, Any]
    method: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows: each placement's scores at both budgets and its rank at each."""
        return placement_table(self.config, self.placements)

    def notes(self) -> list[str]:
        """The lines after the table: budgets, agreement, noise ceiling, leaders, seeds needed, time."""
        return describe_figures(self.config, self.figures, self.timing)


def bench_fidelity(
    config: FidelityConfig | None = None,
    *,
    out: Path | str = BENCH_FOLDER,
    on_progress: Callable[[Progress], None] | None = None,
) -> FidelityBench:
    """Train the grid of ``config`` (None: :class:`FidelityConfig`'s defaults; :data:`QUICK` takes seconds) at both
    budgets and seeds, each training read from or written to ``<out>/fidelity_runs.json``; draw the figures.

    ``on_progress`` is called after each training done now (not after those read from the cache). Interrupted
    (Ctrl-C, a stop signal), the trainings finished so far stay in the cache and the interruption propagates.

    Raises:
        AttnsearchError: a bad grid or budget (:meth:`FidelityConfig.check`), the dataset's files missing from
            ``config.root`` (one line listing the layouts looked for), an unreadable cache.

    Example:
        >>> bench = bench_fidelity(QUICK, out="results/benchmarks")  # doctest: +SKIP
        >>> bench.figures["fidelity"]["spearman"]["statistic"]  # doctest: +SKIP
        0.8
    """
    config = config or FidelityConfig()
    check_fidelity(config)
    return _Bench(config, Path(out), on_progress).run()


def check_fidelity(config: FidelityConfig) -> None:
    """:meth:`FidelityConfig.check`, then the dataset's files (names only, nothing read): one-line
    AttnsearchError for either."""
    from ..data import check_data

    config.check()
    try:
        for budget in ("brief", "long"):
            check_data(config.data(budget))
    except AttnsearchError as err:
        raise AttnsearchError(f"{err} (Debian: apt-get install dataset-fashion-mnist; or pass --root)") from None


class _Bench:
    def __init__(self, config: FidelityConfig, out: Path, on_progress: Callable[[Progress], None] | None) -> None:
        self.config, self.on_progress = config, on_progress
        self.cache_path = out / FIDELITY_CACHE
        self.runs = _read_cache(self.cache_path)

    def run(self) -> FidelityBench:
        import torch

        from ..data import load_dataset
        from ..device import resolve_device

        c = self.config
        began = time.perf_counter()
        load_before = load_average()
        device = resolve_device(c.device)
        threads = c.threads or (CPU_THREADS if device.type == "cpu" else None)
        datasets = {b: load_dataset(c.data(b)) for b in ("brief", "long")}
        if not torch.equal(datasets["brief"].val_x, datasets["long"].val_x):  # the data layer's caps guarantee it
            raise RuntimeError("the two budgets were given different validation images")
        loaded = time.perf_counter()
        grid, seeds = c.grid(), list(range(c.seeds))
        jobs = [(s, b, p) for s in seeds for b in ("brief", "long") for p in grid]  # a seed's brief grid first
        keys = {(s, b, label(p)): _key(c.candidate(p, b, s), device) for s, b, p in jobs}
        work = {b: e * datasets[b].train_x.shape[0] for b, (e, _) in c.budgets().items()}
        if work["long"] < MIN_RATIO * work["brief"]:  # a size beyond what the training split holds was capped
            raise AttnsearchError(
                f"the long budget is only {work['long'] / work['brief']:.2f} times the brief one with the "
                f"{datasets['long'].train_x.shape[0]} training images there are; at least {MIN_RATIO:g} is needed"
            )
        todo = [j for j in jobs if keys[(j[0], j[1], label(j[2]))] not in self.runs]
        spent = done_work = 0.0
        for i, (seed, budget, placement) in enumerate(todo):
            key = keys[(seed, budget, label(placement))]
            run = self._train(c.candidate(placement, budget, seed), datasets[budget], device, threads)
            self.runs[key] = run
            _write_cache(self.cache_path, self.runs)
            spent, done_work = spent + run["seconds"], done_work + work[budget]
            if self.on_progress is not None:
                left = sum(work[b] for _, b, _ in todo[i + 1 :])
                eta = spent / done_work * left if left else None
                name = label(placement)
                self.on_progress(Progress(i + 1, len(todo), budget, seed, name, run["val_acc"], run["seconds"], eta))
        trained = time.perf_counter()
        placements = []
        for p in grid:
            entry: dict[str, Any] = {"placement": label(p), "slots": p}
            for b in ("brief", "long"):
                runs = [self.runs[keys[(s, b, label(p))]] for s in seeds]
                per_seed = [r["val_acc"] for r in runs]
                entry[b] = {
                    "val_acc": sum(per_seed) / len(per_seed),
                    "per_seed": per_seed,
                    "seconds": [r["seconds"] for r in runs],
                    "cpu_seconds": [r["cpu_seconds"] for r in runs],
                }
            placements.append(entry)
        figures = analyse(placements, seeds, val_images=int(datasets["brief"].val_x.shape[0]))
        config = {
            **asdict(c),
            "device": str(device),
            "threads": threads or torch.get_num_threads(),
            "seeds": seeds,
            "val_images": int(datasets["brief"].val_x.shape[0]),
            "budgets": {
                b: {"epochs": e, "train_images": int(datasets[b].train_x.shape[0]), "image_epochs": int(work[b])}
                for b, (e, _) in c.budgets().items()
            },
            "long_over_brief": work["long"] / work["brief"],
            "split": datasets["brief"].split,
        }
        timing = {
            "load_seconds": loaded - began,
            "train_seconds": {b: sum(sum(p[b]["seconds"]) for p in placements) for b in ("brief", "long")},
            "seconds_per_training": {
                b: sum(sum(p[b]["seconds"]) for p in placements) / (len(grid) * len(seeds)) for b in ("brief", "long")
            },
            "trained_now": len(todo),
            "from_cache": len(jobs) - len(todo),
            "this_run_train_seconds": trained - loaded,
            "analysis_seconds": time.perf_counter() - trained,
            "total_seconds": time.perf_counter() - began,
            "load_average": {"start": load_before, "end": load_average()},
        }
        return FidelityBench(config, placements, figures, timing, METHOD)

    def _train(self, candidate: Any, dataset: Any, device: Any, threads: int | None) -> dict[str, Any]:
        from ..search.worker import build_candidate
        from ..train import train_model

        started, cpu = time.perf_counter(), time.process_time()
        model = build_candidate(candidate, dataset, candidate.seed)  # as a trial builds it
        epochs = candidate.train.epochs
        result = train_model(
            model,
            dataset,
            candidate.train,
            device=device,
            seed=candidate.seed,
            threads=threads,
            first_val_epoch=epochs,  # only the last epoch is scored: no time spent on the others
        )
        if result.state != "complete" or result.val_acc is None:
            raise RuntimeError(f"{candidate.describe()} seed {candidate.seed} ended {result.state} ({result.reason})")
        return {
            "placement": candidate.describe(),
            "seed": candidate.seed,
            "epochs": epochs,
            "train_images": int(dataset.train_x.shape[0]),
            "val_acc": float(result.val_acc),
            "val_images": int(dataset.val_x.shape[0]),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
            "images_per_second": result.images_per_second,
            "device": str(device),
        }


def _key(candidate: Any, device: Any) -> str:
    import torch

    identity = candidate.to_dict()
    identity["data"] = {k: v for k, v in identity["data"].items() if k != "root"}  # where the files lie is no part
    text = json.dumps({"candidate": identity, "torch": torch.__version__, "device": device.type}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        runs = data["runs"]
        if not isinstance(runs, dict):
            raise TypeError
        return runs
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AttnsearchError(f"cannot read the fidelity cache {path} ({type(err).__name__}): move it away") from None


def _write_cache(path: Path, runs: dict[str, Any]) -> None:
    from ..schema import plain
    from ..search.store import atomic_write

    text = json.dumps(plain({"format": 1, "runs": runs}), indent=1, sort_keys=True, allow_nan=False)
    atomic_write(path, text.encode() + b"\n")
