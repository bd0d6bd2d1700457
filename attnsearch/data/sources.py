"""Where the images come from: the ``data:`` section of a run turned into an in-memory ``Dataset``.

Sources: ``shapes`` (generated, nothing to download), ``digits`` (scikit-learn's bundled 8x8 digits),
``cifar10``, ``cifar100``, ``mnist`` and ``fashion_mnist`` (torchvision's on-disk formats; their train split trains,
their test split validates), and ``imagefolder`` (one sub-folder of images per class, decoded once and cached).

Each source has a planner that validates the spec cheaply (names, folders, files present, optional packages) and
returns the loader that does the heavy work. ``check_data`` runs only the planner and ``load_dataset`` runs both,
so the two raise the same messages. Every error about the data is a one-line ``AttnsearchError``.

What every source does with its raw tensors is :mod:`attnsearch.data.prepare`'s; the ``imagefolder`` source, with
its decoding and cache, is :mod:`attnsearch.data.imagefolder`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..candidate import DATASETS, DataSpec
from ..errors import AttnsearchError
from .dataset import Dataset
from .imagefolder import plan_imagefolder
from .prepare import check_fraction, derive_seed, finish, holdout, one_line
from .shapes import SHAPE_CLASSES, make_shapes

__all__ = ["DATASETS", "check_data", "load_dataset"]


_SHAPES_TRAIN = 10_000  # default split sizes of the generated dataset
_SHAPES_VAL = 2_000


@dataclass(frozen=True)
class _TorchvisionSource:
    cls_name: str  # attribute of torchvision.datasets
    files: tuple[str, ...]  # relative to root, all needed
    legacy: tuple[str, ...]  # an older complete layout torchvision also reads, () when none
    hint: str  # what the user should place under root


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_like(cls_name: str) -> _TorchvisionSource:
    return _TorchvisionSource(
        cls_name,
        tuple(f"{cls_name}/raw/{f}" for f in _MNIST_RAW),
        (f"{cls_name}/processed/training.pt", f"{cls_name}/processed/test.pt"),
        f"the '{cls_name}/raw' folder with the four unzipped idx files ({', '.join(_MNIST_RAW)})",
    )


_TORCHVISION: dict[str, _TorchvisionSource] = {
    "cifar10": _TorchvisionSource(
        "CIFAR10",
        tuple(f"cifar-10-batches-py/{f}" for f in (*_CIFAR10_TRAIN, "test_batch", "batches.meta")),
        (),
        "the extracted 'cifar-10-batches-py' folder",
    ),
    "cifar100": _TorchvisionSource(
        "CIFAR100",
        ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
        (),
        "the extracted 'cifar-100-python' folder",
    ),
    "mnist": _mnist_like("MNIST"),
    "fashion_mnist": _mnist_like("FashionMNIST"),
}


def check_data(spec: DataSpec) -> None:
    """Validate ``spec`` cheaply, raising the same one-line ``AttnsearchError`` that ``load_dataset`` would.

    Checks the dataset name, sizes, that the files are where torchvision expects them (names only, no checksum),
    that an image folder has class folders with images (listing only, no decoding) and that optional packages are
    installed. Nothing is generated, decoded or downloaded; ``shapes`` is checked in microseconds.

    Example:
        >>> check_data(DataSpec(dataset="shapes", image_size=32))
        >>> try:
        ...     check_data(DataSpec(dataset="svhn"))
        ... except ValueError as e:
        ...     print(e)
        unknown dataset 'svhn': choose one of shapes, digits, cifar10, cifar100, mnist, fashion_mnist, imagefolder
    """
    _plan(spec)


def load_dataset(spec: DataSpec) -> Dataset:
    """Load the dataset that ``spec`` describes as uint8 (N, 3, S, S) images with S = ``spec.image_size``.

    Splits: ``shapes`` generates ``train_size`` (default 10,000) training images from ``spec.seed`` and
    ``val_size`` (default 2,000) validation images from a seed derived from it. ``cifar10``, ``cifar100``,
    ``mnist`` and ``fashion_mnist`` train on their train split and validate on their test split (read from
    ``spec.root``; downloaded only when ``spec.download`` is true). ``digits`` and an ``imagefolder`` without
    ``val_root`` hold out a stratified ``val_fraction`` chosen by ``spec.seed``. ``train_size`` / ``val_size``
    then cap each split to a class-balanced subset chosen by ``spec.seed``. Grey images are repeated to three
    channels and other sizes resized (antialiased bilinear; shorter side plus centre crop for image folders).

    Raises:
        AttnsearchError: one line saying what is wrong and what to do, e.g. where to put missing files.

    Example:
        >>> ds = load_dataset(DataSpec(dataset="shapes", image_size=16, train_size=50, val_size=20))
        >>> ds.train_x.shape, ds.val_x.shape, ds.num_classes
        (torch.Size([50, 3, 16, 16]), torch.Size([20, 3, 16, 16]), 10)
    """
    return _plan(spec)()


# --- planning: validation that check_data and load_dataset share ------------------------------------------------


def _plan(spec: DataSpec) -> Callable[[], Dataset]:
    if spec.dataset not in DATASETS:
        raise AttnsearchError(f"unknown dataset {spec.dataset!r}: choose one of {', '.join(DATASETS)}")
    if not isinstance(spec.image_size, int) or spec.image_size < 8:
        raise AttnsearchError(f"data.image_size must be an integer >= 8, got {spec.image_size!r}")
    for field in ("train_size", "val_size"):
        value = getattr(spec, field)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise AttnsearchError(f"data.{field} must be a positive integer or null, got {value!r}")
    if spec.dataset == "shapes":
        return _plan_shapes(spec)
    if spec.dataset == "digits":
        return _plan_digits(spec)
    if spec.dataset == "imagefolder":
        return plan_imagefolder(spec)
    return _plan_torchvision(spec, _TORCHVISION[spec.dataset])


# --- shapes ---------------------------------------------------------------------------------------------------


def _plan_shapes(spec: DataSpec) -> Callable[[], Dataset]:
    def load() -> Dataset:
        x, y = make_shapes(spec.train_size or _SHAPES_TRAIN, spec.image_size, seed=spec.seed)
        vx, vy = make_shapes(spec.val_size or _SHAPES_VAL, spec.image_size, seed=derive_seed(spec.seed, "shapes-val"))
        return Dataset("shapes", x, y, vx, vy, SHAPE_CLASSES)

    return load


# --- digits ---------------------------------------------------------------------------------------------------


def _plan_digits(spec: DataSpec) -> Callable[[], Dataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AttnsearchError("digits needs scikit-learn: pip install 'attnsearch[digits]'") from None
    check_fraction(spec)

    def load() -> Dataset:
        bunch = load_digits()
        images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), values 0..16
        x = (images * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)[:, None]
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        t, v = holdout(y, spec.val_fraction, derive_seed(spec.seed, "split"), "digits")
        return finish(spec, x[t], y[t], x[v], y[v], tuple(str(c) for c in bunch.target_names))

    return load


# --- torchvision ----------------------------------------------------------------------------------------------


def _plan_torchvision(spec: DataSpec, src: _TorchvisionSource) -> Callable[[], Dataset]:
    name = spec.dataset
    if spec.root is None:
        raise AttnsearchError(
            f"{name} needs data.root: the folder that holds {src.hint} (or gets it with data.download)"
        )
    root = Path(spec.root).expanduser()
    if not spec.download:
        missing = [f for f in src.files if not (root / f).is_file()]
        if missing and not (src.legacy and all((root / f).is_file() for f in src.legacy)):
            raise AttnsearchError(
                f"{name} not found under {root}: place {src.hint} there (missing: {', '.join(missing)}), "
                "or set data.download: true"
            )

    def load() -> Dataset:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, src.cls_name)
        splits = []
        for train in (True, False):
            try:
                ds = cls(str(root), train=train, download=spec.download)
            except (RuntimeError, OSError) as e:
                what = "download failed" if spec.download else "files are incomplete or corrupted"
                raise AttnsearchError(
                    f"{name} under {root}: {what} ({one_line(e)}); place a fresh copy of {src.hint} there"
                ) from None
            data = torch.as_tensor(ds.data)
            data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # grey (N,H,W) or HWC
            splits.append((data, torch.as_tensor(ds.targets, dtype=torch.int64), tuple(str(c) for c in ds.classes)))
        (x, y, classes), (vx, vy, _) = splits
        return finish(spec, x, y, vx, vy, classes)

    return load
