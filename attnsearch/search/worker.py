"""One trial's work, the same under every executor: build the candidate, cost it, train it, score it.

It knows nothing of Optuna or of the screen: pruning decisions arrive through ``report``, interruption through
``should_stop``.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..candidate import Candidate
from ..costs import measure_costs, measure_latency
from ..data import Dataset
from ..model import build_model
from ..record import EpochRecord, Metrics, RepeatRecord, WorkerInfo
from ..stats import accuracy_se
from ..train import is_out_of_memory, train_model
from .settings import Constraints, TrialSettings

__all__ = ["TrialOutcome", "build_candidate", "one_line", "run_candidate", "share_backbone"]


@dataclass
class TrialOutcome:
    """What a worker sends back: the record's typed pieces, plus the weights when they are to be kept."""

    state: str  # complete | pruned | failed | infeasible
    reason: str | None = None  # why a trial was not complete
    metrics: Metrics = field(default_factory=Metrics)  # val_acc (mean over repeats), params, flops, ...
    history: tuple[EpochRecord, ...] = ()  # per epoch, first repeat
    repeats: tuple[RepeatRecord, ...] = ()  # per seed
    timings: dict[str, float] = field(default_factory=dict)  # build, costs, train, eval, total seconds
    worker: WorkerInfo = field(default_factory=WorkerInfo)  # host, pid, device; node and gpus under Ray
    classes: tuple[str, ...] = ()  # what each output of the trained model means
    split: dict[str, Any] = field(default_factory=dict)  # how the data were split (Dataset.split)
    test_acc: float | None = None  # score_test only: top-1 on the test split, apart from every metric
    test_images: int | None = None
    state_dict: dict[str, torch.Tensor] | None = None  # first repeat's trained weights, on the CPU

    def record_fields(self) -> dict[str, Any]:
        """What a :class:`~attnsearch.record.TrialRecord` takes from it: everything but the weights."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "state_dict"}


def build_candidate(
    candidate: Candidate, dataset: Dataset, seed: int, *, init_from: Candidate | None = None
) -> torch.nn.Module:
    """The candidate's model for ``dataset``; its initial weights depend on ``seed`` only.

    ``init_from`` (a confirmation trial's bare backbone, :mod:`attnsearch.search.confirm`): that candidate's model
    is built with the same ``seed`` and its every parameter and buffer copied into the layer of the same name
    (:func:`share_backbone`), so candidates raced against each other start from one initialisation of their
    shared layers; the inserted modules keep the initialisation ``seed`` gave them.
    """
    model = _build(candidate, dataset, seed)
    if init_from is not None and init_from.placements != candidate.placements:
        share_backbone(model, _build(init_from, dataset, seed))
    return model


def _build(candidate: Candidate, dataset: Dataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    b = candidate.backbone
    return build_model(
        b.name,
        candidate.placement_dict(),
        num_classes=dataset.num_classes,
        width=b.width,
        head=b.head,
        image_size=dataset.image_size,
        pretrained=b.pretrained,
        stem=b.stem,
    )


def share_backbone(model: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    """Copy every parameter and buffer of ``reference`` (a backbone, nothing placed) into ``model`` (the same
    backbone with modules placed) by name; returns the names copied.

    Names match because placing a module never renames a backbone layer: :func:`attnsearch.backbones.slots.
    insert_modules` adds ``<slot>_attn`` children after a site and ``attn`` attributes inside per-layer blocks,
    so ``features.7.weight`` is the same convolution with and without a module before it (a Sequential index
    would shift). The inserted modules' own tensors are the only ones ``reference`` lacks.

    Raises:
        ValueError: a tensor of ``reference`` that ``model`` lacks, or holds in another shape (not the same
            backbone).

    Example:
        >>> from attnsearch.model import build_model
        >>> bare = build_model("vgg11_bn", num_classes=10, width=0.125, head="compact", image_size=32)
        >>> placed = build_model("vgg11_bn", {"block3": "se"}, num_classes=10, width=0.125, head="compact",
        ...                      image_size=32)
        >>> copied = share_backbone(placed, bare)
        >>> len(copied) == len(bare.state_dict()), torch.equal(placed.features[0].weight, bare.features[0].weight)
        (True, True)
    """
    target = model.state_dict()
    source = reference.state_dict()
    for name, tensor in source.items():
        if name not in target or target[name].shape != tensor.shape:
            found = tuple(target[name].shape) if name in target else "nothing"
            raise ValueError(f"cannot share initialisation: {name} {tuple(tensor.shape)} against {found}")
    with torch.no_grad():
        for name, tensor in source.items():
            target[name].copy_(tensor)  # state_dict tensors share storage with the model's
    return list(source)


def run_candidate(
    candidate: Candidate,
    dataset: Dataset,
    *,
    device: torch.device,
    constraints: Constraints | None = None,
    repeats: int = 1,
    threads: int | None = None,
    report: Callable[[int, float | None], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_weights: bool = False,
    first_val_epoch: int = 1,
    init_from: Candidate | None = None,
    score_test: bool = False,
) -> TrialOutcome:
    """Build, cost, check constraints, then train ``repeats`` seeds; the first seed's epochs go to ``report``.

    Params and FLOPs are counted (on the meta device), then the latency at batch 1 is measured on ``device``,
    before any training; a candidate that breaks ``constraints`` is not trained. The training memory comes from
    the first training step (``train_memory_bytes``). ``threads`` holds for the whole trial (build, costs,
    training); the caller's setting is restored afterwards. Epochs are validated from ``first_val_epoch`` on, and
    the last (:func:`attnsearch.train.validates`).

    Confirmation trials (:mod:`attnsearch.search.confirm`): ``init_from`` starts the candidate's backbone layers
    from that candidate's initialisation (:func:`build_candidate`); ``score_test`` scores the first seed's trained
    model once on ``dataset.test_x`` (when the dataset has it) into ``test_acc`` and ``test_images``, apart from
    every metric, after everything that judges the trial is known.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        settings = TrialSettings(constraints or Constraints(), repeats, threads, keep_weights, first_val_epoch)
        return _run_candidate(candidate, dataset, device, settings, report, should_stop, init_from, score_test)
    finally:
        torch.set_num_threads(previous)


def _run_candidate(
    candidate: Candidate,
    dataset: Dataset,
    device: torch.device,
    settings: TrialSettings,
    report: Callable[[int, float | None], bool] | None,
    should_stop: Callable[[], bool] | None,
    init_from: Candidate | None = None,
    score_test: bool = False,
) -> TrialOutcome:
    started = time.perf_counter()
    # threads change float results: a replay must use the same number to reproduce the record
    worker = WorkerInfo(socket.gethostname(), os.getpid(), str(device), torch.get_num_threads())
    timings: dict[str, float] = {}

    def build(seed: int) -> torch.nn.Module:
        return build_candidate(candidate, dataset, seed, init_from=init_from)

    try:
        t = time.perf_counter()
        model = build(candidate.seed)
        timings["build"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics: dict[str, Any] = _counts(candidate, dataset, model)
    except Exception as err:  # a candidate that cannot even be built fails alone, with its reason
        return TrialOutcome("failed", one_line(err), timings=timings, worker=worker)
    # size limits first, from counts alone: an oversized candidate is never run, not even for a timing
    reason = settings.constraints.broken(metrics)
    if reason is None:
        try:
            # latency at batch 1 on the trial's own device (where it trains next: the move is not wasted)
            metrics["latency_ms"] = measure_latency(model.to(device), image_size=dataset.image_size, repeats=3)
        except Exception as err:
            timings["costs"] = time.perf_counter() - t
            reason = "oom" if is_out_of_memory(err) else one_line(err)
            return TrialOutcome("failed", reason, metrics=Metrics(**metrics), timings=timings, worker=worker)
        reason = settings.constraints.broken(metrics)
    timings["costs"] = time.perf_counter() - t
    if reason:
        timings["total"] = time.perf_counter() - started
        return TrialOutcome("infeasible", reason, metrics=Metrics(**metrics), timings=timings, worker=worker)

    runs: list[RepeatRecord] = []
    outcome_state, outcome_reason, history, weights = "complete", None, (), None
    test: dict[str, Any] = {}
    for i in range(settings.repeats):
        seed = candidate.seed + i
        if i > 0:
            t = time.perf_counter()
            model = build(seed)
            timings["build"] += time.perf_counter() - t
        try:
            result = train_model(
                model,
                dataset,
                candidate.train,
                device=device,
                seed=seed,
                threads=settings.threads,
                report=report if i == 0 else None,
                should_stop=should_stop,
                first_val_epoch=settings.first_val_epoch,
            )
        except Exception as err:  # a module that raises fails this trial, not the study
            return TrialOutcome(
                "failed", one_line(err), metrics=Metrics(**metrics), history=history, timings=timings, worker=worker
            )
        for key in ("train", "eval"):
            timings[key] = timings.get(key, 0.0) + result.timings.get(key, 0.0)
        if i == 0:
            history = tuple(EpochRecord(**epoch) for epoch in result.history)
            if result.train_memory_bytes is not None:
                metrics["train_memory_bytes"] = result.train_memory_bytes
            if settings.keep_weights and result.state == "complete":
                weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if score_test and result.state == "complete" and dataset.test_x is not None:
                t = time.perf_counter()
                test = _score_test(model, dataset, candidate)
                timings["test"] = time.perf_counter() - t
        runs.append(
            RepeatRecord(
                seed=seed,
                state=result.state,
                val_acc=result.val_acc,
                val_top5=result.val_top5,
                val_loss=result.val_loss,
                train_loss=result.train_loss,
                images_per_second=result.images_per_second,
                epochs_run=result.epochs_run,
            )
        )
        if result.state != "complete":
            outcome_state, outcome_reason = result.state, result.reason
            break
    finished = [r for r in runs if r.state == "complete"] or runs
    for key in ("val_acc", "val_top5", "val_loss", "train_loss", "images_per_second"):
        values = [getattr(r, key) for r in finished if getattr(r, key) is not None]
        if values:
            metrics[key] = statistics.fmean(values)
    accuracies = [r.val_acc for r in finished if r.val_acc is not None]
    if len(accuracies) > 1:
        metrics["val_acc_std"] = statistics.stdev(accuracies)
    scored = [epoch.val_images for epoch in history if epoch.val_images > 0]
    if scored:  # the last validation of the first repeat; every repeat scores the same images
        metrics["val_images"] = scored[-1]
        if metrics.get("val_acc") is not None:
            metrics["val_acc_se"] = accuracy_se(min(max(metrics["val_acc"], 0.0), 1.0), scored[-1])
    metrics["train_seconds"] = timings.get("train", 0.0)
    timings["total"] = time.perf_counter() - started
    return TrialOutcome(
        outcome_state,
        outcome_reason,
        Metrics(**metrics),
        history,
        tuple(runs),
        timings,
        worker,
        split=dict(dataset.split),
        state_dict=weights,
        **test,
    )


def _score_test(model: torch.nn.Module, dataset: Dataset, candidate: Candidate) -> dict[str, Any]:
    """``test_acc`` and ``test_images`` of a trained model: the test split, normalised as training was."""
    from ..data.loader import normalization
    from ..evaluation import evaluate

    assert dataset.test_x is not None and dataset.test_y is not None
    mean, std = normalization(dataset.train_x)
    recipe = candidate.train
    scored = evaluate(
        model,
        (dataset.test_x, dataset.test_y),
        mean=mean,
        std=std,
        batch_size=max(2 * recipe.batch_size, 256),
        precision=recipe.precision,
        channels_last=recipe.channels_last,
    )
    return {"test_acc": scored.accuracy, "test_images": scored.count}


_COUNTS: dict[tuple[Any, ...], dict[str, int]] = {}  # structure -> params and FLOPs, for this process's trials


def _counts(candidate: Candidate, dataset: Dataset, model: torch.nn.Module) -> dict[str, Any]:
    """Params and FLOPs, counted on the meta device (nothing runs), once per structure in a process.

    Candidates that differ only in their training recipe (a searched lr, say) share the counts.
    """
    key = (candidate.backbone.name, candidate.backbone.width, candidate.backbone.head, candidate.placements)
    key += (dataset.image_size, dataset.num_classes)
    if key not in _COUNTS:
        if len(_COUNTS) >= 1024:
            _COUNTS.clear()
        _COUNTS[key] = measure_costs(model, image_size=dataset.image_size)
    return dict(_COUNTS[key])


def one_line(err: BaseException) -> str:
    """An exception as a trial's reason: its type, its message on one line, and where it was raised."""
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300] + where
