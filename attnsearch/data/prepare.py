"""What every source does with its raw tensors: hold out a validation split, cap each split, make uint8 RGB.

Random choices come from the spec's seed through :func:`derive_seed`, one independent stream per choice; the
validation split is held out of the training images class by class (:func:`held_out`); caps keep a class-balanced
subset; images of another size are resized (antialiased bilinear) and grey ones repeated to three channels. A test
split, when asked for, is converted the same way and never capped.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..candidate import DataSpec
from ..errors import AttnsearchError
from .dataset import Dataset

__all__ = ["HELD_OUT", "check_fraction", "derive_seed", "finish", "held_out", "holdout", "one_line"]

HELD_OUT = "held out from train"  # Dataset.split["validation"] of a split drawn by held_out

_RESIZE_CHUNK = 4096  # images resized together: bounds the float copy


def check_fraction(spec: DataSpec) -> None:
    if not 0.0 < spec.val_fraction < 1.0:
        raise AttnsearchError(f"data.val_fraction must be between 0 and 1 (exclusive), got {spec.val_fraction!r}")


def derive_seed(seed: int, tag: str) -> int:
    # independent streams for the different random choices made from one user seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:8], "little") >> 1


def finish(
    spec: DataSpec,
    x: Tensor,
    y: Tensor,
    vx: Tensor,
    vy: Tensor,
    classes: tuple[str, ...],
    *,
    split: dict[str, Any],
    test: tuple[Tensor, Tensor] | None = None,
    test_images: int | None = None,
) -> Dataset:
    # caps first (cheaper resizing), then uint8 RGB at the requested size; ``split`` gains the sizes
    keep = _cap(y, spec.train_size, derive_seed(spec.seed, "train-cap"))
    if keep is not None:
        x, y = x[keep], y[keep]
    vkeep = _cap(vy, spec.val_size, derive_seed(spec.seed, "val-cap"))
    if vkeep is not None:
        vx, vy = vx[vkeep], vy[vkeep]
    record = {**split, "train_images": int(y.shape[0]), "val_images": int(vy.shape[0])}
    tx = ty = None
    if test is not None:
        tx, ty = _to_rgb(test[0], spec.image_size), test[1]
        test_images = int(ty.shape[0])
    if test_images is not None:
        record["test_images"] = test_images
    size = spec.image_size
    return Dataset(
        spec.dataset, _to_rgb(x, size), y, _to_rgb(vx, size), vy, classes, test_x=tx, test_y=ty, split=record
    )


def held_out(spec: DataSpec, y: Tensor, what: str) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Indices of the training and validation images of ``y``'s images, the validation ones a stratified
    ``spec.val_fraction`` drawn with a seed derived from ``spec.seed``, and the ``Dataset.split`` entries that
    say so."""
    check_fraction(spec)
    seed = derive_seed(spec.seed, "split")
    t, v = holdout(y, spec.val_fraction, seed, what)
    return t, v, {"validation": HELD_OUT, "val_fraction": spec.val_fraction, "split_seed": seed}


def _cap(y: Tensor, cap: int | None, seed: int) -> Tensor | None:
    n = y.shape[0]
    if cap is None or cap >= n:
        return None  # everything, without a copy
    # round-robin over classes in a random order: balanced while every class still has images left
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = torch.argsort(y[perm], stable=True)
    by_class = perm[order]
    counts = torch.bincount(y[by_class])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[y[by_class]]
    chosen = by_class[torch.argsort(rank, stable=True)[:cap]]
    return chosen.sort().values


def holdout(y: Tensor, fraction: float, seed: int, what: str) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed))
    train, val = [], []
    for c in torch.unique(y).tolist():
        members = perm[y[perm] == c]  # this class, in random order
        k = min(max(round(len(members) * fraction), 1), len(members) - 1) if len(members) > 1 else 0
        val.append(members[:k])
        train.append(members[k:])
    t, v = torch.cat(train).sort().values, torch.cat(val).sort().values
    if v.numel() == 0:
        raise AttnsearchError(f"{what}: too few images to hold out a validation split (each class needs at least 2)")
    return t, v


def _to_rgb(x: Tensor, size: int) -> Tensor:
    if x.shape[-2:] != (size, size):
        out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
        for i in range(0, x.shape[0], _RESIZE_CHUNK):
            part = x[i : i + _RESIZE_CHUNK].float()
            part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out[i : i + _RESIZE_CHUNK] = part.round_().clamp_(0, 255).to(torch.uint8)
        x = out
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
