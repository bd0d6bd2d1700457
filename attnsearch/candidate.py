"""The Candidate: one point of a search space, everything needed to rebuild and retrain a trial.

The search produces it, the worker builds and trains it, the store writes it into ``trial.json``, export turns it
into code and replay back into a training run. It holds plain values only (no Optuna object, no module), is frozen
and hashable, and round-trips through JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["BackboneSpec", "Candidate", "DataSpec", "PlacementSpec", "TrainRecipe"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str = "vgg16_bn"  # any key of list_backbones()
    width: float = 1.0  # channel multiplier
    head: str = "compact"  # compact | classic
    pretrained: bool = False  # torchvision's ImageNet weights (width 1.0 only)


@dataclass(frozen=True)
class PlacementSpec:
    slot: str  # e.g. "block3"
    module: str  # registry key, never "none" (an empty slot is simply absent)
    params: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs: hashable, order-free

    def describe(self) -> str:
        """``block3=cbam(kernel_size=7)``, parameters left out when there are none."""
        inner = ",".join(f"{k}={_short(v)}" for k, v in self.params)
        return f"{self.slot}={self.module}" + (f"({inner})" if inner else "")


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "shapes"  # shapes | digits | cifar10 | cifar100 | mnist | fashion_mnist | imagefolder
    root: str | None = None  # folder of torchvision datasets and of imagefolder's train images
    val_root: str | None = None  # imagefolder only: a separate validation folder
    image_size: int = 32  # images are resized (or generated) to image_size x image_size
    train_size: int | None = None  # cap on training images, None = all
    val_size: int | None = None  # cap on validation images, None = all
    val_fraction: float = 0.2  # held out from train when the dataset has no validation split
    download: bool = False  # torchvision datasets only: fetch when missing
    seed: int = 0  # the split and the generated data depend on it, never on the trial's seed


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 3  # passes over the training images
    steps: int | None = None  # when set, a budget in optimizer steps instead of epochs
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (nesterov momentum 0.9) | adamw
    lr: float = 0.05  # peak learning rate
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: tuple[str, ...] = ("crop", "flip")  # random crop with 4-pixel padding, horizontal flip
    schedule: str = "cosine"  # cosine (linear warm-up, cosine decay) | onecycle
    warmup_epochs: float = 0.5
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool = True
    epoch_val_size: int | None = None  # validation images scored after each epoch but the last; None = all
    # the first epoch scored on validation: the ones before it (never the last) skip the pass, as no pruner looks
    # at them; 1 = every epoch
    first_val_epoch: int = 1

    def validates(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (from 1) of ``epochs`` ends with a validation pass: the last always does."""
        return epoch == epochs or epoch >= self.first_val_epoch


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
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        """The inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        _check_keys(cls, d, "candidate")
        train = dict(d.get("train", {}))
        _check_keys(TrainRecipe, train, "train")
        if "augment" in train:
            train["augment"] = tuple(train["augment"])
        placements = []
        for p in d.get("placements", []):
            _check_keys(PlacementSpec, p, "placement")
            placements.append(PlacementSpec(p["slot"], p["module"], tuple(sorted(p.get("params", {}).items()))))
        backbone, data = dict(d.get("backbone", {})), dict(d.get("data", {}))
        _check_keys(BackboneSpec, backbone, "backbone")
        _check_keys(DataSpec, data, "data")
        return cls(
            backbone=BackboneSpec(**backbone),
            placements=tuple(placements),
            train=TrainRecipe(**train),
            data=DataSpec(**data),
            seed=d.get("seed", 0),
        )

    def key(self, *, with_seed: bool = False) -> str:
        """A stable hash of what is trained: equal candidates (seed aside, unless asked) share it."""
        d = self.to_dict()
        if not with_seed:
            d.pop("seed")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _check_keys(cls: type, d: dict[str, Any], where: str) -> None:
    """Known keys only, each value of its field's type (a hand-edited trial.json fails here, in one line)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
        if not _fits(value, hints[key]):
            raise ValueError(f"{where}.{key}: must be {_type_name(hints[key])}, got {json.dumps(value)[:40]}")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a field of type ``hint`` (a list for a tuple, an int for a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)  # its own keys are checked where it is built
    if origin is tuple:
        if isinstance(value, dict) and typing.get_origin(args[0]) is tuple:  # pairs, written as a mapping
            value = list(value.items())
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return (
        "null"
        if hint is type(None)
        else {int: "an integer", float: "a number", str: "a string"}.get(hint, f"a {getattr(hint, '__name__', hint)}")
    )


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)
