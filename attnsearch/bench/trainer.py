"""``attnsearch bench trainer``: our ``train_model`` against a hand-written PyTorch loop and a DataLoader pipeline.

Every pipeline trains a copy of the same model (same initial weights) for the same number of steps, with the same
batch size, optimizer (SGD, nesterov), precision, memory format and thread count, in this one process. Rounds
alternate between the two sides of each comparison (ours, theirs, then theirs, ours, ...), after a warm-up round
that is not counted; a pipeline's speed is its median over the rounds, and a comparison's ratio the median of the
rounds' ratios:

- ``train_model`` (no augmentation) against a minimal loop over float tensors already normalised in memory: what
  our trainer costs over the bare minimum (LR schedule, loss checks, uint8 batches normalised on the fly);
- ``train_model`` with crop and flip against the conventional torchvision pipeline: a ``DataLoader`` with worker
  processes running ``RandomCrop(padding=4, reflect)``, ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize``
  on one PIL image at a time: what batched in-memory augmentation buys;
- ``train_model`` with the seed recipe's augmentation (resized crop, flip, colour jitter, MixUp or CutMix, through
  kornia) against the same augmentation written as kornia's documentation shows it: a ``DataLoader`` of
  ``ToTensor`` images, then kornia on each batch on the device (:mod:`attnsearch.bench.trainer_recipe`).

Our time is the wall time of the ``train_model`` call less its validation pass, so its set-up per run
(normalisation statistics, batch index, optimizer) is counted against it.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..candidate import DataSpec, TrainRecipe
from ..data import Dataset, load_dataset
from ..data.loader import CROP_PADDING, normalization
from ..device import resolve_device
from ..model import build_model
from ..train import train_model
from .output import load_average
from .trainer_recipe import RECIPE_AUGMENT, RECIPE_PARAMS, KorniaLoop

__all__ = ["PipelineSpeed", "TrainerBench", "TrainerComparison", "bench_trainer"]

OURS = "train_model"
OURS_AUGMENTED = "train_model, crop + flip"
HAND_LOOP = "hand-written loop, float tensors"
DATALOADER = "DataLoader, per-sample transforms"
OURS_RECIPE = "train_model, seed recipe (kornia)"
KORNIA_LOADER = "DataLoader + kornia on the batch"


@dataclass
class PipelineSpeed:
    pipeline: str
    images_per_second: float  # median over the rounds
    rounds: list[float] = field(default_factory=list)  # images per second of each round, in order


@dataclass
class TrainerComparison:
    ours: str
    baseline: str
    ours_images_per_second: float  # median over the rounds
    baseline_images_per_second: float
    # ours / baseline, the median of the rounds' ratios: each round runs the two back to back, so a change in the
    # machine's load between rounds cancels out; above 1, ours is faster
    ratio: float
    ratio_of_medians: float  # ours_images_per_second / baseline_images_per_second


@dataclass
class TrainerBench:
    """Images per second of each pipeline and the three comparisons.

    Example:
        >>> bench = bench_trainer(width=0.125, backbone="vgg11_bn", batch_size=8, steps=2, rounds=1,
        ...                       workers=0)  # doctest: +SKIP
        >>> [c.baseline for c in bench.comparisons]  # doctest: +SKIP
        ['hand-written loop, float tensors', 'DataLoader, per-sample transforms', 'DataLoader + kornia on the batch']
    """

    config: dict[str, Any]
    pipelines: list[PipelineSpeed]
    comparisons: list[TrainerComparison]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """Title, columns and rows of the comparisons, as ``attnsearch bench trainer`` prints them."""
        c = self.config
        title = (
            f"Trainer: {c['backbone']} x{c['width']:g}, batch {c['batch_size']}, {c['steps_per_round']} steps x "
            f"{c['rounds']} rounds, {c['threads']} threads, {c['device']} {c['precision']}; DataLoader "
            f"{c['dataloader']['num_workers']} workers"
        )
        rows = [
            [
                r.ours,
                r.baseline,
                f"{r.ours_images_per_second:,.0f}",
                f"{r.baseline_images_per_second:,.0f}",
                f"{r.ratio:.3f}",
            ]
            for r in self.comparisons
        ]
        return title, ["ours", "baseline", "ours img/s", "baseline img/s", "ratio"], rows

    def notes(self) -> list[str]:
        """The lines printed after the table: none, the table says it all."""
        return []


def bench_trainer(
    *,
    backbone: str = "vgg16_bn",
    width: float = 0.25,
    placements: dict[str, Any] | None = None,
    image_size: int = 32,
    batch_size: int = 64,
    steps: int = 20,
    rounds: int = 15,
    threads: int | None = None,
    workers: int = 2,
    persistent_workers: bool = True,
    device: str = "cpu",
) -> TrainerBench:
    """Train the same model ``steps`` steps per round through each pipeline, ``rounds`` alternating rounds.

    ``placements`` defaults to the quickstart's kind of candidate, SE after block 3 and self-attention after
    block 5. ``threads`` (default: torch's current setting) holds for every pipeline; the DataLoader runs
    ``workers`` worker processes beside it (0: in the main process).
    """
    load = load_average()  # before this process adds its own
    threads = threads or torch.get_num_threads()
    torch_device = resolve_device(device)  # an AttnsearchError for CUDA on a machine without it
    bf16 = torch_device.type == "cuda"  # precision "auto", as train_model resolves it: bf16 on CUDA, fp32 on CPU
    placements = {"block3": "se", "block5": "self_attention"} if placements is None else placements
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # one pass of the training images is exactly one round's steps: every pipeline sees each image once a round
        dataset = load_dataset(
            DataSpec(dataset="shapes", image_size=image_size, train_size=steps * batch_size, val_size=batch_size)
        )
        torch.manual_seed(0)
        template = build_model(
            backbone, placements, num_classes=dataset.num_classes, width=width, head="compact", image_size=image_size
        )
        recipe = TrainRecipe(
            epochs=1, steps=steps, batch_size=batch_size, optimizer="sgd", lr=0.01, weight_decay=5e-4, augment=()
        )
        augmented = TrainRecipe(**{**asdict(recipe), "augment": ("crop", "flip")})
        seed_recipe = TrainRecipe(**{**asdict(recipe), "augment": RECIPE_AUGMENT, "augment_params": RECIPE_PARAMS})
        mean, std = normalization(dataset.train_x)
        floats = ((dataset.train_x.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(torch_device)
        floats = floats.contiguous(memory_format=torch.channels_last)
        labels = dataset.train_y.to(torch_device)
        dataset = dataset.to(torch_device)  # resident on the device, as a run's executor keeps it
        hand = _HandLoop(recipe, bf16, torch_device)

        def ours(recipe: TrainRecipe) -> Callable[[int], float]:
            def run(seed: int) -> float:
                model = copy.deepcopy(template)
                started = time.perf_counter()
                result = train_model(model, dataset, recipe, device=torch_device, seed=seed, threads=threads)
                if result.state != "complete":
                    raise RuntimeError(f"train_model ended {result.state} ({result.reason})")
                return time.perf_counter() - started - result.timings["eval"]  # its final validation is not training

            return run

        images = steps * batch_size
        speeds = _alternate(
            (OURS, ours(recipe)),
            (HAND_LOOP, lambda seed: hand.run(copy.deepcopy(template), floats, labels, seed)),
            rounds,
            images,
        )
        # the DataLoader's worker processes start only now: they are not there while the first pair is measured
        loader = _conventional_loader(
            dataset, _crop_flip(dataset.image_size, mean, std), batch_size, workers, persistent_workers
        )
        speeds |= _alternate(
            (OURS_AUGMENTED, ours(augmented)),
            (DATALOADER, lambda seed: hand.run_loader(copy.deepcopy(template), loader, steps)),
            rounds,
            images,
        )
        kornia = KorniaLoop(seed_recipe, bf16, torch_device, mean, std, image_size)
        tensors = _conventional_loader(dataset, _to_tensor(), batch_size, workers, persistent_workers)
        speeds |= _alternate(
            (OURS_RECIPE, ours(seed_recipe)),
            (KORNIA_LOADER, lambda seed: kornia.run(copy.deepcopy(template), tensors, steps)),
            rounds,
            images,
        )
    finally:
        torch.set_num_threads(previous)
    pipelines = [PipelineSpeed(name, statistics.median(values), values) for name, values in speeds.items()]
    medians = {p.pipeline: p.images_per_second for p in pipelines}
    comparisons = [
        TrainerComparison(
            a,
            b,
            medians[a],
            medians[b],
            statistics.median(x / y for x, y in zip(speeds[a], speeds[b], strict=True)),
            medians[a] / medians[b],
        )
        for a, b in ((OURS, HAND_LOOP), (OURS_AUGMENTED, DATALOADER), (OURS_RECIPE, KORNIA_LOADER))
    ]
    config = {
        "backbone": backbone,
        "width": width,
        "load_average_before": load,
        "placements": placements,
        "image_size": image_size,
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "threads": threads,
        "device": str(torch_device),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "memory_format": "channels_last",
        "optimizer": f"SGD nesterov momentum 0.9, lr {recipe.lr}, weight decay {recipe.weight_decay}",
        "dataloader": {
            "num_workers": workers,
            "persistent_workers": persistent_workers and workers > 0,
            "transforms": f"RandomCrop({image_size}, padding={CROP_PADDING}, reflect), RandomHorizontalFlip, "
            "ToTensor, Normalize",
            "samples": "PIL images from uint8 arrays in memory",
        },
        "seed_recipe": {
            "augment": list(RECIPE_AUGMENT),
            "augment_params": {name: dict(keys) for name, keys in RECIPE_PARAMS},
            "baseline": "DataLoader of ToTensor images; on the device kornia AugmentationSequential("
            "RandomHorizontalFlip, RandomResizedCrop, ColorJitter, Normalize), then RandomMixUpV2 or RandomCutMixV2 "
            "(p = 1/2 each)",
        },
    }
    return TrainerBench(config, pipelines, comparisons)


def _alternate(
    first: tuple[str, Callable[[int], float]], second: tuple[str, Callable[[int], float]], rounds: int, images: int
) -> dict[str, list[float]]:
    """Images per second of each side over ``rounds`` rounds: A then B, B then A, ...; a warm-up round first."""
    speeds: dict[str, list[float]] = {first[0]: [], second[0]: []}
    for round_ in range(rounds + 1):  # round 0 warms up (allocator, kernels, worker start-up) and is dropped
        for name, run in (first, second) if round_ % 2 == 0 else (second, first):
            seconds = run(round_)
            if round_ > 0:
                speeds[name].append(images / seconds)
    return speeds


class _HandLoop:
    """The minimal loop a person writes: a permutation, slices, forward, loss, backward, step."""

    def __init__(self, recipe: TrainRecipe, bf16: bool, device: torch.device) -> None:
        self.recipe = recipe
        self.bf16 = bf16
        self.device = device

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        r = self.recipe
        return torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay)

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
        model.to(self.device, memory_format=torch.channels_last).train()
        optimizer = self._optimizer(model)
        batch = self.recipe.batch_size
        started = time.perf_counter()
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed)).to(self.device)
        for start in range(0, x.shape[0] - batch + 1, batch):
            index = order[start : start + batch]
            self._step(model, optimizer, x[index], y[index])
        _synchronize(self.device)
        return time.perf_counter() - started

    def run_loader(self, model: nn.Module, loader: torch.utils.data.DataLoader, steps: int) -> float:
        model.to(self.device, memory_format=torch.channels_last).train()
        optimizer = self._optimizer(model)
        started = time.perf_counter()
        done = 0
        for x, y in loader:  # one epoch: exactly `steps` batches
            x = x.to(self.device, memory_format=torch.channels_last, non_blocking=True)
            self._step(model, optimizer, x, y.to(self.device, non_blocking=True))
            done += 1
        _synchronize(self.device)
        if done != steps:
            raise RuntimeError(f"the DataLoader gave {done} batches, not {steps}")
        return time.perf_counter() - started


class _PilSamples(torch.utils.data.Dataset):
    """One image at a time, as a PIL image through torchvision transforms: the conventional data path."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # uint8 (N, H, W, C), as PIL wants it
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def _crop_flip(size: int, mean: torch.Tensor, std: torch.Tensor) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomCrop(size, padding=CROP_PADDING, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),  # to float in 0..1
            transforms.Normalize((mean / 255).tolist(), (std / 255).tolist()),
        ]
    )


def _to_tensor() -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms

    return transforms.ToTensor()  # float in 0..1: kornia augments the batch on the device


def _conventional_loader(
    dataset: Dataset, transform: Callable[[Any], torch.Tensor], batch_size: int, workers: int, persistent: bool
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _PilSamples(dataset.train_x.cpu(), dataset.train_y.cpu(), transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
