"""Plug-in datasets: the keys a space file's ``data.dataset`` may name beyond the built-in sources.

A plug-in registers a loader with :func:`register_dataset`; :mod:`attnsearch.data.plugin_source` calls it, checks
what it returns and makes it a :class:`~attnsearch.data.Dataset` like the built-ins' (capped, resized to
``data.image_size``, grey repeated to three channels). Nothing here imports torch: the space file's validation
asks this registry which names exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import AttnsearchError

__all__ = [
    "DatasetInfo",
    "check_dataset_name",
    "dataset_info",
    "plugin_datasets",
    "register_dataset",
    "unregister_dataset",
]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    loader: Callable[..., Any]  # f(spec: DataSpec) -> mapping or object with train_x, train_y, val_x, val_y
    classes: tuple[str, ...]  # class names, label i is classes[i]


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(key: str, *, classes: int | Sequence[str]) -> Callable[[_F], _F]:
    """Decorator registering a dataset loader under ``key``: the public way in for a dataset of one's own.

    The loader takes the run's :class:`~attnsearch.candidate.DataSpec` and returns a mapping (or an object with
    these attributes): ``train_x``, ``val_x`` uint8 images ``(N, C, H, W)`` (C = 1 or 3) or ``(N, H, W)``;
    ``train_y``, ``val_y`` int64 labels ``(N,)`` in ``0 .. classes - 1``; optionally ``test_x``, ``test_y``.
    Tensors or numpy arrays. Images of another size are resized to ``data.image_size`` (antialiased bilinear), as
    the built-in sources do, and ``data.train_size`` / ``val_size`` cap the splits. ``classes`` is their number or
    their names. Raises an AttnsearchError for a key registered twice (a built-in name included).

    Example:
        >>> @register_dataset("doc_toy", classes=["cat", "dog"])
        ... def toy(spec):
        ...     raise NotImplementedError
        >>> dataset_info("doc_toy").classes
        ('cat', 'dog')
        >>> unregister_dataset("doc_toy")
    """
    from .candidate import DATASETS

    if isinstance(classes, bool) or not isinstance(classes, (int, Sequence)) or isinstance(classes, str):
        raise AttnsearchError(f"dataset {key!r}: classes must be a number or a list of names, got {classes!r}")
    names = tuple(str(i) for i in range(classes)) if isinstance(classes, int) else tuple(map(str, classes))
    if len(names) < 2:
        raise AttnsearchError(f"dataset {key!r}: needs at least 2 classes, got {len(names)}")

    def decorate(loader: _F) -> _F:
        if key in DATASETS or key in _DATASETS:
            raise AttnsearchError(f"dataset {key!r} is registered twice")
        if not callable(loader):
            raise AttnsearchError(f"dataset {key!r}: register_dataset decorates a function f(spec)")
        _DATASETS[key] = DatasetInfo(key, loader, names)
        return loader

    return decorate


def plugin_datasets() -> list[str]:
    """Keys registered by plug-ins, in registration order."""
    return list(_DATASETS)


def dataset_info(key: str) -> DatasetInfo | None:
    """The plug-in dataset ``key``; None when no plug-in registered it (a built-in, or unknown)."""
    return _DATASETS.get(key)


def unregister_dataset(key: str) -> None:
    _DATASETS.pop(key, None)


def check_dataset_name(value: object) -> None:
    """A ValueError unless ``value`` names a built-in source or a loaded plug-in's dataset.

    Example:
        >>> check_dataset_name("svhn")
        Traceback (most recent call last):
        ...
        ValueError: unknown dataset 'svhn'; valid: shapes, digits, cifar10, cifar100, mnist, fashion_mnist, \
imagefolder; a plug-in dataset? pass --plugin FILE
    """
    from .candidate import DATASETS

    valid = ", ".join((*DATASETS, *_DATASETS))
    if not isinstance(value, str):
        raise ValueError(f"must be one of {valid}, got {value!r}")
    if value not in DATASETS and value not in _DATASETS:
        raise ValueError(f"unknown dataset {value!r}; valid: {valid}; a plug-in dataset? pass --plugin FILE")
