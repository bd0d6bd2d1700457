"""The Candidate: one point of a search space, everything needed to rebuild and retrain a trial.

The search produces it, the worker builds and trains it, the store writes it into ``trial.json``, export turns it
into code and replay back into a training run. It holds plain values only (no Optuna object, no module), is frozen
and hashable, and round-trips through JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, with_config

from .augment_params import check_augment_params, params_mapping, params_pairs
from .schema import CHOICES, RANGE, STRICT, from_json

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "HEADS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "STEMS",
    "BackboneSpec",
    "Candidate",
    "DataSpec",
    "PlacementSpec",
    "TrainRecipe",
]

# Each list of valid values has its home here; the space file, the trainer, the data sources and the backbones
# read it from here.
Head = Literal["classic", "compact"]  # classic: torchvision's; compact: global pool + one linear layer
DatasetName = Literal["shapes", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"]
Optimizer = Literal["sgd", "adamw"]  # sgd: nesterov momentum 0.9
Schedule = Literal["cosine", "onecycle", "step"]  # step: torch's StepLR, by epochs
Precision = Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on CUDA, fp32 on the CPU
# crop: random crop with 4-pixel padding; flip: horizontal flip; the others through kornia, with augment_params
Augment = Literal["crop", "flip", "resized_crop", "color_jitter", "mixup", "cutmix"]
Stem = Literal["imagenet", "cifar"]  # ResNet's first layers: 7x7 stride-2 conv + max pool, or one 3x3 stride-1 conv
HEADS: tuple[str, ...] = get_args(Head)
DATASETS: tuple[str, ...] = get_args(DatasetName)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
AUGMENTS: tuple[str, ...] = get_args(Augment)
STEMS: tuple[str, ...] = get_args(Stem)

# Fields added after candidates were first written, with their defaults: ``to_dict`` leaves each out while it holds
# its default, so a candidate written before the field existed keeps its key (a study resumes, a cache still hits).
LATER_FIELDS: dict[str, dict[str, Any]] = {
    "backbone": {"stem": "imagenet"},
    "train": {"step_size": 30, "gamma": 0.1, "augment_params": {}},
}

PositiveInt = Annotated[int, Field(ge=1)]


def _all_is_none(value: Any) -> Any:
    """A split size written ``all`` in a space file means no cap: None."""
    return None if value == "all" else value


SplitSize = Annotated[PositiveInt | None, BeforeValidator(_all_is_none)]  # a cap on a split; None or "all": all


@with_config(STRICT)
@dataclass(frozen=True)
class BackboneSpec:
    name: str = field(default="vgg16_bn", metadata=CHOICES)  # any key of list_backbones()
    width: Annotated[float, Field(gt=0, le=4)] = field(default=1.0, metadata=CHOICES)  # channel multiplier
    head: Head = field(default="compact", metadata=CHOICES)
    pretrained: bool = False  # torchvision's ImageNet weights (width 1.0 only)
    stem: Stem = "imagenet"  # residual backbones only: "cifar" for 32x32 images (3x3 stride-1 conv, no max pool)


def _pairs(value: Any) -> Any:
    """Module parameters as JSON writes them (a mapping) become sorted (name, value) pairs."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


@with_config(STRICT)
@dataclass(frozen=True)
class PlacementSpec:
    slot: str  # e.g. "block3"
    module: str  # registry key, never "none" (an empty slot is simply absent)
    # sorted (name, value) pairs: hashable, order-free; written as a mapping
    params: Annotated[tuple[tuple[str, Any], ...], BeforeValidator(_pairs)] = ()

    def describe(self) -> str:
        """``block3=cbam(kernel_size=7)``, parameters left out when there are none."""
        inner = ",".join(f"{k}={_short(v)}" for k, v in self.params)
        return f"{self.slot}={self.module}" + (f"({inner})" if inner else "")


@with_config(STRICT)
@dataclass(frozen=True)
class DataSpec:
    # a built-in source (DATASETS) or a plug-in's key: checked against the registry when a space is validated (a
    # record naming a plug-in dataset still reads without it) and when the data is loaded
    dataset: str = "shapes"
    root: str | None = None  # folder of a published dataset's files and of imagefolder's train images
    val_root: str | None = None  # imagefolder only: a separate validation folder
    image_size: Annotated[int, Field(ge=8, le=1024)] = 32  # images are resized (or generated) to this square
    train_size: SplitSize = None  # cap on training images, None (or "all" in a space file) = all
    val_size: SplitSize = None  # cap on validation images, None (or "all" in a space file) = all
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2  # validation part held out of train (not: shapes, val_root)
    download: bool = False  # published datasets only: torchvision fetches them into root when missing
    seed: int = 0  # the split and the generated data depend on it, never on the trial's seed


@with_config(STRICT)
@dataclass(frozen=True)
class TrainRecipe:
    """How a candidate is trained. How it is judged (which epochs are validated for the pruner) is not part of it:
    that belongs to the run (:class:`~attnsearch.search.settings.TrialSettings`), so it never changes a
    candidate's identity."""

    epochs: Annotated[int, Field(ge=1, le=10_000)] = 3  # passes over the training images
    steps: PositiveInt | None = None  # when set, a budget in optimizer steps instead of epochs
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = field(default=128, metadata=CHOICES)
    optimizer: Optimizer = field(default="sgd", metadata=CHOICES)
    lr: Annotated[float, Field(gt=0)] = field(default=0.05, metadata=RANGE)  # peak learning rate
    weight_decay: Annotated[float, Field(ge=0)] = field(default=5e-4, metadata=RANGE)
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = field(default=0.1, metadata=CHOICES)
    augment: tuple[Augment, ...] = ("crop", "flip")
    schedule: Schedule = field(default="cosine", metadata=CHOICES)  # cosine: linear warm-up, cosine decay
    step_size: PositiveInt = 30  # schedule step: epochs between decays (torchvision's ImageNet reference: 30)
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # schedule step: the factor of each decay
    # per augmentation, the parameters written for it (others: see attnsearch.augment_params): sorted
    # (name, ((key, value), ...)) pairs, hashable and order-free; written as a mapping
    augment_params: Annotated[
        tuple[tuple[str, tuple[tuple[str, Any], ...]], ...],
        BeforeValidator(params_pairs),
        AfterValidator(check_augment_params),
    ] = ()
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.5
    precision: Precision = "auto"
    channels_last: bool = True
    epoch_val_size: PositiveInt | None = None  # validation images scored after each epoch but the last; None = all


@with_config(STRICT)
@dataclass(frozen=True)
class Candidate:
    """One model and its training: the unit every part of attnsearch shares.

    Example:
        >>> c = Candidate(BackboneSpec("vgg11", 0.25), (PlacementSpec("block3", "se", (("reduction", 8),)),))
        >>> Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c
        True
        >>> c.describe()
        'block3=se(reduction=8)'
    """

    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    placements: tuple[PlacementSpec, ...] = ()  # sorted by slot name
    train: TrainRecipe = field(default_factory=TrainRecipe)
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0  # weights, batch order and augmentation

    def __post_init__(self) -> None:
        object.__setattr__(self, "placements", tuple(sorted(self.placements, key=lambda p: p.slot)))

    def placement_dict(self) -> dict[str, dict[str, Any]]:
        """Slot -> ``{"type": key, **params}``, the form ``build_model`` takes."""
        return {p.slot: {"type": p.module, **dict(p.params)} for p in self.placements}

    def describe(self) -> str:
        """Placements written compactly, e.g. ``block3=cbam(kernel_size=7) block5=self_attention``."""
        return " ".join(p.describe() for p in self.placements) or "baseline (nothing placed)"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["placements"] = [{"slot": p.slot, "module": p.module, "params": dict(p.params)} for p in self.placements]
        d["train"]["augment"] = list(self.train.augment)
        d["train"]["augment_params"] = params_mapping(self.train.augment_params)
        for section, defaults in LATER_FIELDS.items():
            for name, default in defaults.items():
                if d[section].get(name) == default:
                    del d[section][name]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "candidate") -> Candidate:
        """The inverse of :meth:`to_dict`: every key and value checked; an AttnsearchError (one line, naming
        ``where`` and the key) for an unknown key, a wrong type or a value out of range.

        A candidate written before the pruner's settings left the recipe (its ``train.first_val_epoch``) is read
        as the same candidate without it.
        """
        return from_json(cls, cls.upgrade(d), where)  # where: the key path it sits under

    @staticmethod
    def upgrade(d: Any) -> Any:
        """A candidate's JSON as written before the pruner's settings left the recipe, without its
        ``train.first_val_epoch`` (the same candidate); anything else as it is."""
        if isinstance(d, dict) and isinstance(d.get("train"), dict) and "first_val_epoch" in d["train"]:
            return {**d, "train": {k: v for k, v in d["train"].items() if k != "first_val_epoch"}}
        return d

    def key(self, *, with_seed: bool = False) -> str:
        """A stable hash of what is trained: equal candidates (seed aside, unless asked) share it."""
        d = self.to_dict()
        if not with_seed:
            d.pop("seed")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)
