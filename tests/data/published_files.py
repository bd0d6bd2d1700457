"""Tiny copies of the published MNIST-like and CIFAR files, written on the spot, every image recognisable.

Each image carries where it came from in its first pixels: (tag, index // 256, index % 256), tag TRAIN_TAG for
the training file and TEST_TAG for the test file (for CIFAR, the index counts across all training batches), so a
test can tell from a loaded image which file and which record it is.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attnsearch.candidate import DataSpec
from attnsearch.data import check_data, load_dataset

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN_TAG, TEST_TAG = 201, 202
CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX format: 0, 0, type 0x08 (unsigned byte), rank; each size big-endian; the bytes."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: Path, data: bytes) -> Path:
    """``data`` at ``path``, gzipped when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def labels_for(n: int, seed: int) -> np.ndarray:
    """``n`` labels of 10 classes of unequal sizes (class c about twice as likely as class 0 when c = 9)."""
    p = np.linspace(1.0, 2.0, 10)
    return np.random.default_rng(seed).choice(10, size=n, p=p / p.sum()).astype(np.uint8)


def marked_images(n: int, tag: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``n`` random uint8 images of ``shape``; flattened, image i starts (tag, i // 256, i % 256)."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = tag
    flat[:, 1] = np.arange(n) // 256
    flat[:, 2] = np.arange(n) % 256
    return images


def mnist_arrays(n_train: int = 150, n_test: int = 40) -> dict[str, np.ndarray]:
    """The four files' arrays: 28 x 28 images marked as above, labels from :func:`labels_for`."""
    return {
        IDX_FILES[0]: marked_images(n_train, TRAIN_TAG, (28, 28), 1),
        IDX_FILES[1]: labels_for(n_train, 2),
        IDX_FILES[2]: marked_images(n_test, TEST_TAG, (28, 28), 3),
        IDX_FILES[3]: labels_for(n_test, 4),
    }


def write_mnist(folder: Path, *, gz: bool | tuple[bool, ...] = True, n_train: int = 150, n_test: int = 40) -> None:
    """The four IDX files in ``folder``: all gzipped, none, or one flag per file."""
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    for (name, array), zipped in zip(mnist_arrays(n_train, n_test).items(), flags, strict=True):
        write(folder / (name + (".gz" if zipped else "")), idx_bytes(array))


def origin(x: torch.Tensor) -> list[tuple[int, int]]:
    """(tag, index) of each image of a uint8 (N, 3, S, S) batch loaded at its files' own size: the first three
    pixels of its first row in its first channel (a grey image's only one)."""
    first = x.reshape(x.shape[0], -1)[:, :3].to(torch.int64)
    return [(t, hi * 256 + lo) for t, hi, lo in first.tolist()]


# --- CIFAR ----------------------------------------------------------------------------------------------------


def cifar_batches(
    n_train: tuple[int, ...] = (30, 30, 30, 30, 30), n_test: int = 40, *, hundred: bool = False, text_keys: bool = False
) -> dict[str, dict[Any, Any]]:
    """The batch dicts of the python version: CIFAR-10's five batches, test_batch and batches.meta, or CIFAR-100's
    train, test and meta (``hundred``; ``n_train`` then has one entry). Keys are bytes, as Python 3 reads the
    published Python 2 pickles with ``encoding="bytes"``, or str (``text_keys``), as a Python 3 writer makes them."""

    def key(k: str) -> Any:
        return k if text_keys else k.encode()

    labels_key = key("fine_labels" if hundred else "labels")
    n_classes = 100 if hundred else 10
    batches: dict[str, dict[Any, Any]] = {}
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    start = 0
    for b, (name, n) in enumerate(zip(names, n_train, strict=True)):
        data = marked_images(start + n, TRAIN_TAG, (3072,), 10 + b)[start:]  # indices count across batches
        labels = [int(v) % n_classes for v in np.random.default_rng(20 + b).integers(0, 1000, n)]
        batches[name] = {key("batch_label"): f"training batch {b + 1}".encode(), labels_key: labels, key("data"): data}
        start += n
    test_labels = [int(v) % n_classes for v in np.random.default_rng(30).integers(0, 1000, n_test)]
    test = {key("batch_label"): b"testing batch", labels_key: test_labels}
    test[key("data")] = marked_images(n_test, TEST_TAG, (3072,), 31)
    batches["test" if hundred else "test_batch"] = test
    if hundred:
        batches["meta"] = {key("fine_label_names"): [f"fine{i}".encode() for i in range(100)]}
    else:
        batches["batches.meta"] = {key("label_names"): CIFAR10_NAMES, key("num_cases_per_batch"): n_train[0]}
    return batches


def cifar_folder(hundred: bool) -> str:
    return "cifar-100-python" if hundred else "cifar-10-batches-py"


def write_cifar_folder(root: Path, batches: dict[str, Any], *, hundred: bool = False) -> Path:
    """The extracted folder: one protocol-2 pickle per batch, like the published ones."""
    folder = root / cifar_folder(hundred)
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=2))
    return folder


def write_cifar_tarball(root: Path, batches: dict[str, Any], *, hundred: bool = False) -> Path:
    """The published tarball, its members under the folder's name (written through a scratch folder)."""
    scratch = write_cifar_folder(root / "scratch", batches, hundred=hundred)
    path = root / ("cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(scratch, arcname=scratch.name)
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    scratch.parent.rmdir()
    return path


def same_error(spec: DataSpec, match: str) -> str:
    """``check_data`` and ``load_dataset`` raise one identical one-line ValueError for ``spec``; returns it."""
    with pytest.raises(ValueError, match=match) as checked:
        check_data(spec)
    with pytest.raises(ValueError, match=match) as loaded:
        load_dataset(spec)
    assert str(checked.value) == str(loaded.value)
    assert "\n" not in str(checked.value)
    return str(checked.value)
