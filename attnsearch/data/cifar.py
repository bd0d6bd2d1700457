"""CIFAR-10 and CIFAR-100 in their published python version, read in place from the tarball or its folder.

The format (A. Krizhevsky, "The CIFAR-10 dataset", https://www.cs.toronto.edu/~kriz/cifar.html): each batch file is
a Python 2 pickle of a dict whose ``data`` is a uint8 numpy array of shape (N, 3072), one image a row (1024 red,
then 1024 green, then 1024 blue values, each channel 32 x 32 in row-major order), and whose ``labels`` (CIFAR-10)
or ``fine_labels`` (CIFAR-100) is a list of N class indices. CIFAR-10 has five training batches
(``data_batch_1`` to ``data_batch_5``, 10,000 images each), ``test_batch`` (10,000) and ``batches.meta``, whose
``label_names`` names the 10 classes; CIFAR-100 has ``train`` (50,000), ``test`` (10,000) and ``meta``, whose
``fine_label_names`` names the 100 classes. ``cifar-10-python.tar.gz`` holds them under ``cifar-10-batches-py/``,
``cifar-100-python.tar.gz`` under ``cifar-100-python/``.

A pickle can run any code it names, so the batches are read by an unpickler that builds nothing but numpy arrays
of plain values, bytes, strings, numbers, lists and dicts: any other reference (``os.system``, say) is refused
before it is called. Python 2's strings arrive as bytes (``encoding="bytes"``); keys are compared as text.
"""

from __future__ import annotations

import pickle
import tarfile
import zlib
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from ..errors import AttnsearchError
from .prepare import one_line

__all__ = ["CIFAR_LAYOUTS", "CifarLayout", "read_cifar"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR version keeps its batches and what they are called."""

    tarball: str  # the published archive's file name
    folder: str  # the folder it extracts to (and the prefix of its members)
    train: tuple[str, ...]  # training batches, in order
    test: str
    meta: str
    labels: str  # key of the class indices in a batch
    names: str  # key of the class names in the meta file

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": CifarLayout(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"
    ),
}


@dataclass(frozen=True)
class CifarSplits:
    """Raw splits: uint8 (N, 3, 32, 32) images and int64 (N,) labels; the test images only when asked for."""

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]
    test_count: int
    test_x: Tensor | None = None
    test_y: Tensor | None = None


def read_cifar(source: Path, layout: CifarLayout, *, test: bool) -> CifarSplits:
    """Read the batches of ``layout`` from ``source``: its tarball (read in place, never extracted) or its
    extracted folder. Without ``test``, the test batch is only counted: its labels are read, its pixels skipped.

    Raises:
        AttnsearchError: one line naming the file for a missing member, a broken archive or pickle, a pickle that
            names anything but plain data ("refusing to unpickle os.system from .../test_batch"), or a batch
            whose arrays do not have the shapes above.
    """
    wanted = {name: (name == layout.test and not test) for name in layout.files}  # name -> count only
    batches: dict[str, dict[str, Any]] = {}
    with closing(_members(source, layout, wanted)) as members:  # closes the archive when a batch is refused
        for name, where, stream in members:
            batches[name] = _unpickle(stream, where, count_only=wanted[name])
    classes = tuple(_text(n) for n in _field(batches[layout.meta], layout.names, _where(source, layout, layout.meta)))
    xs, ys = [], []
    for name in layout.train:
        x, y = _images(batches[name], layout, len(classes), _where(source, layout, name))
        xs.append(x)
        ys.append(y)
    test_batch = batches[layout.test]
    test_where = _where(source, layout, layout.test)
    if not test:
        return CifarSplits(torch.cat(xs), torch.cat(ys), classes, len(_labels(test_batch, layout, test_where)))
    tx, ty = _images(test_batch, layout, len(classes), test_where)
    return CifarSplits(torch.cat(xs), torch.cat(ys), classes, len(ty), tx, ty)


def _where(source: Path, layout: CifarLayout, name: str) -> str:
    return f"{source}:{layout.folder}/{name}" if source.is_file() else str(source / name)


_Member = tuple[str, str, BinaryIO]  # name, where (for messages), readable stream


def _members(source: Path, layout: CifarLayout, wanted: dict[str, bool]) -> Generator[_Member, None, None]:
    if source.is_dir():
        for name in wanted:
            path = source / name
            try:
                with open(path, "rb") as f:
                    yield name, str(path), f
            except OSError as e:
                raise AttnsearchError(f"cannot read {path}: {one_line(e)}") from None
        return
    left = set(wanted)
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:  # one pass over the compressed stream, in the archive's order
                folder, _, name = member.name.rpartition("/")
                if folder.removeprefix("./") == layout.folder and name in left and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    left.discard(name)
                    yield name, f"{source}:{member.name}", f
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise AttnsearchError(f"{source} is incomplete or corrupted ({one_line(e)}); place a fresh copy") from None
    if left:
        missing = ", ".join(f"{layout.folder}/{n}" for n in sorted(left))
        raise AttnsearchError(f"{source} is incomplete: it lacks {missing}; place a fresh copy there")


def _images(batch: dict[str, Any], layout: CifarLayout, n_classes: int, where: str) -> tuple[Tensor, Tensor]:
    data = _field(batch, "data", where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise AttnsearchError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got {shape}")
    labels = _labels(batch, layout, where)
    if labels.shape[0] != data.shape[0]:
        raise AttnsearchError(f"{where} has {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise AttnsearchError(f"{where}: a label is outside 0..{n_classes - 1}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels.astype(np.int64))


def _labels(batch: dict[str, Any], layout: CifarLayout, where: str) -> np.ndarray:
    raw = _field(batch, layout.labels, where)
    try:
        labels = np.asarray(raw) if isinstance(raw, (list, np.ndarray)) else None
    except ValueError:  # a ragged list
        labels = None
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise AttnsearchError(f"{where}: '{layout.labels}' must be a list of integers, one per image")
    return labels


def _field(batch: dict[str, Any], key: str, where: str) -> Any:
    if key not in batch:
        raise AttnsearchError(f"{where} has no '{key}': not a CIFAR batch of this version")
    return batch[key]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- the restricted unpickler -------------------------------------------------------------------------------


class _Refused(Exception):
    pass


class _Skipped:
    """Stands in for an array whose values are not wanted (the test batch, counted only)."""

    def __init__(self, *_args: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # how a Python 3 pickle of protocol 2 writes bytes: _codecs.encode(text, "latin1"); nothing else is allowed
    if encoding != "latin1":
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array rebuilder, without naming its private module
_SAFE: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1, and the published (Python 2) files
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
    ("__builtin__", "bytes"): bytes,  # an empty bytes object in a protocol-2 pickle
    ("builtins", "bytes"): bytes,
}


class _ArraysOnly(pickle.Unpickler):
    count_only = False

    def find_class(self, module: str, name: str) -> Any:
        found = _SAFE.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        if self.count_only and found is _RECONSTRUCT:
            return _Skipped
        return found


def _unpickle(stream: BinaryIO, where: str, *, count_only: bool) -> dict[str, Any]:
    unpickler = _ArraysOnly(stream, encoding="bytes")
    unpickler.count_only = count_only
    try:
        batch = unpickler.load()
    except _Refused as e:
        raise AttnsearchError(f"refusing to unpickle {e} from {where}") from None
    except Exception as e:  # a damaged pickle raises almost anything (UnpicklingError, EOFError, ValueError, ...)
        raise AttnsearchError(f"{where} is incomplete or corrupted ({one_line(e)}); place a fresh copy there") from None
    if not isinstance(batch, dict):
        raise AttnsearchError(f"{where} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict")
    return {_text(k): v for k, v in batch.items()}
