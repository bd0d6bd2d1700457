"""Where the images come from: the ``data:`` section of a run turned into an in-memory ``Dataset``.

Sources: ``shapes`` (generated, nothing to download), ``digits`` (scikit-learn's bundled 8x8 digits),
``cifar10``, ``cifar100``, ``mnist`` and ``fashion_mnist`` (read in place from their published files:
:mod:`attnsearch.data.published`), and ``imagefolder`` (one sub-folder of images per class, decoded once and
cached).

Trials are never scored on a test split: every source validates on images held out of its training images
(stratified, ``data.val_fraction``, drawn with a seed derived from ``data.seed``), except ``shapes``, which
generates its validation images, and an ``imagefolder`` with its own ``val_root``. The test split of the datasets
that have one (``shapes`` and the four published ones) is loaded only by ``load_dataset(spec, test=True)``.

Each source has a planner that validates the spec cheaply (names, folders, files present, optional packages) and
returns the loader that does the heavy work. ``check_data`` runs only the planner and ``load_dataset`` runs both,
so the two raise the same messages. Every error about the data is a one-line ``AttnsearchError``.

What every source does with its raw tensors is :mod:`attnsearch.data.prepare`'s; the ``imagefolder`` source, with
its decoding and cache, is :mod:`attnsearch.data.imagefolder`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..candidate import DATASETS, DataSpec
from ..errors import AttnsearchError
from .dataset import Dataset
from .imagefolder import plan_imagefolder
from .plugin_source import plan_plugin
from .prepare import check_fraction, derive_seed, finish, held_out
from .published import plan_published
from .shapes import SHAPE_CLASSES, make_shapes

__all__ = ["DATASETS", "check_data", "load_dataset"]


_SHAPES_TRAIN = 10_000  # default split sizes of the generated dataset
_SHAPES_VAL = 2_000


def check_data(spec: DataSpec) -> None:
    """Validate ``spec`` cheaply, raising the same one-line ``AttnsearchError`` that ``load_dataset`` would.

    Checks the dataset name, sizes, that a published dataset's files are in one of the layouts it is looked for in
    (names only: nothing is read), that an image folder has class folders with images (listing only, no
    decoding) and that optional packages are installed. Nothing is generated, decoded or downloaded; ``shapes``
    is checked in microseconds.

    Example:
        >>> check_data(DataSpec(dataset="shapes", image_size=32))
        >>> try:
        ...     check_data(DataSpec(dataset="svhn"))
        ... except ValueError as e:
        ...     print(e)  # doctest: +ELLIPSIS
        unknown dataset 'svhn': choose one of shapes, digits, cifar10, cifar100, mnist, fashion_mnist, imagefolder...
    """
    _plan(spec)


def load_dataset(spec: DataSpec, *, test: bool = False) -> Dataset:
    """Load the dataset that ``spec`` describes as uint8 (N, 3, S, S) images with S = ``spec.image_size``.

    Splits: ``shapes`` generates ``train_size`` (default 10,000) training images from ``spec.seed`` and
    ``val_size`` (default 2,000) validation images from a seed derived from it. Every other source holds out a
    stratified ``val_fraction`` of its training images as the validation split, drawn with a seed derived from
    ``spec.seed`` (an ``imagefolder`` with ``val_root`` validates on that folder instead); ``cifar10``,
    ``cifar100``, ``mnist`` and ``fashion_mnist`` are read from ``spec.root`` (downloaded only when
    ``spec.download`` is true). ``train_size`` / ``val_size`` then cap each split to a class-balanced subset
    chosen by ``spec.seed``. Grey images are repeated to three channels and other sizes resized (antialiased
    bilinear; shorter side plus centre crop for image folders). ``Dataset.split`` records how.

    With ``test=True`` the test split comes too, as ``test_x`` / ``test_y`` at the same image size and never
    capped: the published test files (10,000 images for each of the four), or for ``shapes`` ``val_size``
    (default 2,000) images generated from another derived seed. Without it the test images are not loaded (only
    counted, for ``split["test_images"]``), so nothing a trial sees can come from them.

    Raises:
        AttnsearchError: one line saying what is wrong and what to do, e.g. every place a missing dataset was
            looked for; ``"<name> has no test split"`` for ``test=True`` on ``digits`` or ``imagefolder``.

    Example:
        >>> ds = load_dataset(DataSpec(dataset="shapes", image_size=16, train_size=50, val_size=20))
        >>> ds.train_x.shape, ds.val_x.shape, ds.num_classes, ds.test_x
        (torch.Size([50, 3, 16, 16]), torch.Size([20, 3, 16, 16]), 10, None)
        >>> ds.split
        {'validation': 'generated', 'train_images': 50, 'val_images': 20, 'test_images': 20}
        >>> load_dataset(DataSpec(dataset="shapes", image_size=16, train_size=50, val_size=20), test=True).test_x.shape
        torch.Size([20, 3, 16, 16])
    """
    return _plan(spec)(test)


# --- planning: validation that check_data and load_dataset share ------------------------------------------------


def _plan(spec: DataSpec) -> Callable[[bool], Dataset]:
    from ..dataset_registry import dataset_info, plugin_datasets

    plugin = dataset_info(spec.dataset)
    if spec.dataset not in DATASETS and plugin is None:
        valid = ", ".join((*DATASETS, *plugin_datasets()))
        raise AttnsearchError(f"unknown dataset {spec.dataset!r}: choose one of {valid}; a plug-in? pass --plugin FILE")
    if not isinstance(spec.image_size, int) or spec.image_size < 8:
        raise AttnsearchError(f"data.image_size must be an integer >= 8, got {spec.image_size!r}")
    for field in ("train_size", "val_size"):
        value = getattr(spec, field)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise AttnsearchError(f"data.{field} must be a positive integer or null, got {value!r}")
    if plugin is not None:
        return plan_plugin(spec, plugin)
    if spec.dataset == "shapes":
        return _plan_shapes(spec)
    if spec.dataset == "digits":
        return _plan_digits(spec)
    if spec.dataset == "imagefolder":
        return plan_imagefolder(spec)
    return plan_published(spec)


# --- shapes ---------------------------------------------------------------------------------------------------


def _plan_shapes(spec: DataSpec) -> Callable[[bool], Dataset]:
    def load(test: bool) -> Dataset:
        x, y = make_shapes(spec.train_size or _SHAPES_TRAIN, spec.image_size, seed=spec.seed)
        n_val = spec.val_size or _SHAPES_VAL
        vx, vy = make_shapes(n_val, spec.image_size, seed=derive_seed(spec.seed, "shapes-val"))
        tx = ty = None
        if test:  # as many as validate, from a third stream
            tx, ty = make_shapes(n_val, spec.image_size, seed=derive_seed(spec.seed, "shapes-test"))
        split = {"validation": "generated", "train_images": len(y), "val_images": n_val, "test_images": n_val}
        return Dataset("shapes", x, y, vx, vy, SHAPE_CLASSES, test_x=tx, test_y=ty, split=split)

    return load


# --- digits ---------------------------------------------------------------------------------------------------


def _plan_digits(spec: DataSpec) -> Callable[[bool], Dataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AttnsearchError("digits needs scikit-learn: pip install 'attnsearch[digits]'") from None
    check_fraction(spec)

    def load(test: bool) -> Dataset:
        if test:
            raise AttnsearchError("digits has no test split")
        bunch = load_digits()
        images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), values 0..16
        x = (images * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)[:, None]
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        t, v, split = held_out(spec, y, "digits")
        return finish(spec, x[t], y[t], x[v], y[v], tuple(str(c) for c in bunch.target_names), split=split)

    return load
