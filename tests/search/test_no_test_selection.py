"""No trial is scored on the test split: a search on Fashion-MNIST-format files whose test labels are all wrong.

The four idx files are written on the spot: class c is a bright band at rows 2c + 4 and 2c + 5 over noise, which a
tiny VGG learns in a few epochs. The test file holds the same kind of images with every label shifted by one, so a
trial scored on it would score about 0%, while one scored on a split held out of the training file scores high.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnsearch.data import load_dataset
from attnsearch.search.runner import run_search
from attnsearch.space import parse_space
from tests.data.published_files import idx_bytes, write
from tests.tiny import space as tiny_space

N_TRAIN, N_TEST = 600, 200


def banded(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 96, (n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 4 : 2 * c + 6, :] = 255
    return images, labels


def test_trials_are_scored_on_a_split_of_the_training_file_never_on_the_test_file(tmp_path: Path) -> None:
    train_x, train_y = banded(N_TRAIN, 1)
    test_x, test_y = banded(N_TEST, 2)
    wrong = (test_y + 1) % 10  # every test label is wrong
    for name, array in (
        ("train-images-idx3-ubyte.gz", train_x),
        ("train-labels-idx1-ubyte.gz", train_y),
        ("t10k-images-idx3-ubyte.gz", test_x),
        ("t10k-labels-idx1-ubyte.gz", wrong),
    ):
        write(tmp_path / "data" / name, idx_bytes(array))
    data = tiny_space(
        slots={"block3": ["none", "se"]},
        data={"dataset": "fashion_mnist", "root": str(tmp_path / "data"), "train_size": None, "val_size": None},
        train={"epochs": 4},
        search={"sampler": "grid", "pruner": "none"},
    )
    space = parse_space(data)
    results = run_search(space, results=tmp_path / "results").results
    held_out = round(N_TRAIN * 0.2)  # val_fraction's default, stratified: within one image per class
    for record in results.ranked():
        assert record.split["validation"] == "held out from train" and record.split["test_images"] == N_TEST
        assert (
            abs(record.metrics.val_images - held_out) <= 10 and record.metrics.val_images == record.split["val_images"]
        )
        assert record.metrics.val_images + record.split["train_images"] == N_TRAIN
        assert record.score("val_acc") > 0.5  # scored on the training file's images; on the test file: about 0
    # the test split, loaded on purpose, is the one whose labels are wrong: a model scored there would fail
    dataset = load_dataset(space.data_spec(), test=True)
    assert dataset.test_y is not None and dataset.test_y.tolist() == wrong.tolist()
