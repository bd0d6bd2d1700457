"""No selection on the test set: the validation split is held out of the training files, the test split is kept apart.

Every image of the tiny files carries its origin (file and index, published_files.py), so the splits are checked
image by image: validation and test share none, validation comes from the train file only, test from the test file
only, the held-out part is stratified and follows data.seed, and what a trial loads carries no test image at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from attnsearch.candidate import DataSpec
from attnsearch.data import load_dataset
from attnsearch.data.prepare import derive_seed
from published_files import TEST_TAG, TRAIN_TAG, cifar_batches, origin, write_cifar_tarball, write_mnist

pytestmark = pytest.mark.usefixtures("one_thread")


def mnist_root(root: Path) -> tuple[str, int]:
    write_mnist(root, n_train=400, n_test=60)  # gzipped, directly in root: as published
    return "fashion_mnist", 28


def cifar_root(root: Path) -> tuple[str, int]:
    write_cifar_tarball(root, cifar_batches((80,) * 5, n_test=60))
    return "cifar10", 32


FILES: dict[str, Callable[[Path], tuple[str, int]]] = {"idx": mnist_root, "cifar": cifar_root}


@pytest.mark.parametrize("files", list(FILES))
def test_validation_is_held_out_of_train_and_test_is_kept_apart(files: str, tmp_path: Path) -> None:
    name, size = FILES[files](tmp_path)
    spec = DataSpec(dataset=name, root=str(tmp_path), image_size=size, val_fraction=0.25, seed=11)
    ds = load_dataset(spec, test=True)
    assert ds.test_x is not None and ds.test_y is not None
    train, val, test = origin(ds.train_x), origin(ds.val_x), origin(ds.test_x)

    assert not set(val) & set(test)  # no image both validates and tests
    assert {tag for tag, _ in val} == {TRAIN_TAG}  # validation: the train file only
    assert {tag for tag, _ in train} == {TRAIN_TAG}
    assert {tag for tag, _ in test} == {TEST_TAG}  # test: the test file only, all of it, once each
    assert sorted(i for _, i in test) == list(range(60))
    assert not set(train) & set(val)  # the train file split in two, nothing lost or repeated
    assert sorted(i for _, i in train + val) == list(range(400))

    # stratified: each class gives val_fraction of its images, to within one image
    pool = Counter(ds.train_y.tolist()) + Counter(ds.val_y.tolist())
    held = Counter(ds.val_y.tolist())
    assert len(pool) == 10 and max(pool.values()) - min(pool.values()) > 5  # unequal classes: a real test of it
    for label, n in pool.items():
        assert abs(held[label] - 0.25 * n) <= 1, (label, held[label], n)

    assert ds.split == {
        "validation": "held out from train",
        "val_fraction": 0.25,
        "split_seed": derive_seed(11, "split"),
        "train_images": len(train),
        "val_images": len(val),
        "test_images": 60,
    }

    # what every trial loads: the same train and validation images, no test split at all
    trial = load_dataset(spec)
    assert trial.test_x is None and trial.test_y is None
    assert origin(trial.val_x) == val and origin(trial.train_x) == train
    assert trial.split == ds.split

    # the data seed draws the split: the same seed gives it again, another seed another one
    again = load_dataset(DataSpec(dataset=name, root=str(tmp_path), image_size=size, val_fraction=0.25, seed=11))
    assert origin(again.val_x) == val
    other = load_dataset(DataSpec(dataset=name, root=str(tmp_path), image_size=size, val_fraction=0.25, seed=12))
    assert set(origin(other.val_x)) != set(val) and {t for t, _ in origin(other.val_x)} == {TRAIN_TAG}
    assert other.split["split_seed"] != ds.split["split_seed"]


def test_caps_draw_from_the_held_out_splits_only(tmp_path: Path) -> None:
    name, size = mnist_root(tmp_path)
    ds = load_dataset(DataSpec(dataset=name, root=str(tmp_path), image_size=size, train_size=100, val_size=30))
    assert (len(ds.train_y), len(ds.val_y)) == (100, 30)
    full = load_dataset(DataSpec(dataset=name, root=str(tmp_path), image_size=size))
    assert set(origin(ds.val_x)) <= set(origin(full.val_x))  # a capped validation split stays held out
    assert set(origin(ds.train_x)) <= set(origin(full.train_x))
    assert ds.split["train_images"] == 100 and ds.split["val_images"] == 30 and ds.split["test_images"] == 60
