"""A plug-in's dataset (registered with :func:`attnsearch.register_dataset`) made a :class:`Dataset`.

The loader's arrays are checked when they are loaded, each failure one line naming the plug-in: uint8 images
``(N, C, H, W)`` with C = 1 or 3 (or ``(N, H, W)``, one channel), int64 labels ``(N,)`` as many as the images, every
label in ``0 .. classes - 1``, and every declared class present among the training labels. Then they are treated
as the built-in sources' are (:func:`attnsearch.data.prepare.finish`): ``train_size`` / ``val_size`` cap the splits
(class-balanced), images of another size are resized to ``data.image_size`` (antialiased bilinear) and grey ones
repeated to three channels. The validation split is the loader's own (``split["validation"] == "plug-in"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..candidate import DataSpec
from ..dataset_registry import DatasetInfo
from ..errors import AttnsearchError
from .dataset import Dataset
from .prepare import finish

__all__ = ["plan_plugin"]


def plan_plugin(spec: DataSpec, info: DatasetInfo) -> Callable[[bool], Dataset]:
    """The loader of ``info`` for ``spec``: nothing is called until the data is loaded."""
    from ..plugins import plugin_of

    plugin = plugin_of("dataset", info.key)
    who = f"plug-in dataset {info.key!r}" + (f" ({plugin.name})" if plugin else "")

    def load(test: bool) -> Dataset:
        try:
            found = info.loader(spec)
        except AttnsearchError:
            raise
        except Exception as err:  # the plug-in's own code: its message on one line
            raise AttnsearchError(
                f"{who}: the loader failed: {type(err).__name__}: {' '.join(str(err).split())}"
            ) from None
        n = len(info.classes)
        x, y = _split(who, found, "train", n, every_class=True)
        vx, vy = _split(who, found, "val", n)
        has_test = _get(found, "test_x") is not None
        if test and not has_test:
            raise AttnsearchError(f"{info.key} has no test split")
        tests = _split(who, found, "test", n) if test else None
        split: dict[str, Any] = {"validation": "plug-in"}
        count = len(_get(found, "test_y")) if has_test and not test else None
        return finish(spec, x, y, vx, vy, info.classes, split=split, test=tests, test_images=count)

    return load


def _get(found: Any, name: str) -> Any:
    return found.get(name) if isinstance(found, Mapping) else getattr(found, name, None)


def _split(who: str, found: Any, part: str, classes: int, *, every_class: bool = False) -> tuple[Any, Any]:
    raw_x, raw_y = _get(found, f"{part}_x"), _get(found, f"{part}_y")
    if raw_x is None or raw_y is None:
        raise AttnsearchError(f"{who}: returns no {part}_x / {part}_y")
    x, y = _tensor(who, raw_x, f"{part}_x"), _tensor(who, raw_y, f"{part}_y")
    if x.dtype != torch.uint8:
        raise AttnsearchError(f"{who}: {part}_x must be uint8 images (0..255), got {_dtype(x)}")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one channel
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise AttnsearchError(f"{who}: {part}_x must be (N, C, H, W) with C 1 or 3, or (N, H, W); got {tuple(x.shape)}")
    if y.dtype != torch.int64 or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise AttnsearchError(
            f"{who}: {part}_y must be int64 labels (N,) for {x.shape[0]} images, got {_dtype(y)} {tuple(y.shape)}"
        )
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise AttnsearchError(f"{who}: {part}_y holds label {bad}, outside its {classes} classes (0..{classes - 1})")
    if every_class:
        missing = sorted(set(range(classes)) - set(y.unique().tolist()))
        if missing:
            raise AttnsearchError(f"{who}: {part}_y has no image of declared class {missing[0]} (of {classes})")
    return x, y


def _tensor(who: str, value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AttnsearchError(f"{who}: {name} is not an array: {err}") from None


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")
