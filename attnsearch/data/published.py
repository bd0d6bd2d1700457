"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, read in place from the layouts they are published in.

Looked for under ``data.root``, in this order:

- ``mnist``, ``fashion_mnist``: the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; :mod:`attnsearch.data.idx`), each gzipped (``.gz``) or
  not, directly in ``root`` (as LeCun's page, Zalando's repository and Debian's ``dataset-fashion-mnist`` ship
  them), then in torchvision's ``root/MNIST/raw`` or ``root/FashionMNIST/raw``, then torchvision's older
  ``root/<Name>/processed/training.pt`` and ``test.pt`` (read with ``torch.load(weights_only=True)``). MNIST and
  Fashion-MNIST use the same file names: ``root`` must hold the one that ``data.dataset`` names.
- ``cifar10``, ``cifar100``: the extracted folder (``root/cifar-10-batches-py``, ``root/cifar-100-python``), then
  the published tarball (``root/cifar-10-python.tar.gz``, ``root/cifar-100-python.tar.gz``), read without
  extracting it (:mod:`attnsearch.data.cifar`).

With ``data.download: true`` and nothing found, torchvision downloads the published files into ``root`` (checking
their md5 sums) and they are read from there like any other copy; nothing is downloaded when a copy is found.

The validation split is held out of the training files (stratified ``data.val_fraction``, seed derived from
``data.seed``); the test files are read only for ``load_dataset(spec, test=True)``, and otherwise only counted
(an IDX header; a CIFAR test batch's labels, its pixels skipped), so a trial never sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..candidate import DataSpec
from ..errors import AttnsearchError
from .cifar import CIFAR_LAYOUTS, CifarLayout, read_cifar
from .dataset import Dataset
from .idx import idx_count, read_idx
from .prepare import check_fraction, finish, held_out, one_line

__all__ = ["plan_published"]

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_LEGACY = ("training.pt", "test.pt")  # torchvision's processed/ files before version 0.9
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class _IdxSet:
    folder: str  # torchvision's class name and folder: MNIST, FashionMNIST
    classes: tuple[str, ...]


_IDX_SETS = {
    "mnist": _IdxSet("MNIST", tuple(f"{i} - {w}" for i, w in enumerate(_DIGIT_NAMES))),
    "fashion_mnist": _IdxSet(
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}


def plan_published(spec: DataSpec) -> Callable[[bool], Dataset]:
    """Check ``spec`` cheaply (a root, a complete layout under it unless ``download``) and return the loader:
    ``load(test)`` reads the files found (or downloads them first) into a ``Dataset``.

    Raises:
        AttnsearchError: one line; a missing dataset names every layout looked for.
    """
    name = spec.dataset
    if spec.root is None:
        raise AttnsearchError(
            f"{name} needs data.root: the folder that holds {_hint(name)} (or gets it with data.download)"
        )
    check_fraction(spec)
    root = Path(spec.root).expanduser()
    found = _find(name, root)
    if found is None and not spec.download:
        raise AttnsearchError(_missing(name, root))

    def load(test: bool) -> Dataset:
        where = found if found is not None else _download(name, root)
        if name in _IDX_SETS:
            return _load_idx(spec, where, _IDX_SETS[name], test=test)
        return _load_cifar(spec, where, CIFAR_LAYOUTS[name], test=test)

    return load


def _hint(name: str) -> str:
    if name in _IDX_SETS:
        return f"the four idx files of {_IDX_SETS[name].folder} ({', '.join(IDX_FILES)}, gzipped or not)"
    return f"{CIFAR_LAYOUTS[name].tarball} or its extracted folder {CIFAR_LAYOUTS[name].folder}"


# --- finding the files ----------------------------------------------------------------------------------------


def _find(name: str, root: Path) -> Path | tuple[Path, ...] | None:
    """The four IDX files, the legacy folder, the CIFAR folder or tarball: the first complete layout, else None."""
    if name in _IDX_SETS:
        folder = _IDX_SETS[name].folder
        for where in (root, root / folder / "raw"):
            files = [found for f in IDX_FILES if (found := _idx_file(where, f)) is not None]
            if len(files) == len(IDX_FILES):
                return tuple(files)
        processed = root / folder / "processed"
        return processed if all((processed / f).is_file() for f in _LEGACY) else None
    layout = CIFAR_LAYOUTS[name]
    if all((root / layout.folder / f).is_file() for f in layout.files):
        return root / layout.folder
    return root / layout.tarball if (root / layout.tarball).is_file() else None


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):  # the unzipped copy reads faster
        if candidate.is_file():
            return candidate
    return None


def _missing(name: str, root: Path) -> str:
    partial = []
    if name in _IDX_SETS:
        folder = _IDX_SETS[name].folder
        raw = root / folder / "raw"
        for where in (root, raw):
            have = [f for f in IDX_FILES if _idx_file(where, f) is not None]
            if have:
                partial.append(f"{where} has only {', '.join(have)}")
        looked = (
            f"looked for the four idx files ({', '.join(f'{f}[.gz]' for f in IDX_FILES)}) in {root} and in {raw}, "
            f"and for torchvision's older {root / folder / 'processed'}/{{{','.join(_LEGACY)}}}"
        )
    else:
        layout = CIFAR_LAYOUTS[name]
        files = (
            f"{layout.train[0]} to {layout.train[-1]}, " if len(layout.train) > 1 else f"{layout.train[0]}, "
        ) + f"{layout.test}, {layout.meta}"
        extracted = root / layout.folder
        if extracted.is_dir():
            lacking = [f for f in layout.files if not (extracted / f).is_file()]
            partial.append(f"{extracted} lacks {', '.join(lacking)}")
        looked = f"looked for {root / layout.tarball} and for the extracted folder {extracted} ({files})"
    found = f" ({'; '.join(partial)})" if partial else ""
    place = "them" if name in _IDX_SETS else "either"
    return f"{name} not found under {root}: {looked}{found}; place {place} there or set data.download: true"


def _download(name: str, root: Path) -> Path | tuple[Path, ...]:
    import torchvision.datasets
    import torchvision.datasets.utils

    try:
        if name in _IDX_SETS:  # downloads the four files into root/<Name>/raw, unzipped, and reads them once
            getattr(torchvision.datasets, _IDX_SETS[name].folder)(str(root), train=True, download=True)
        else:  # the tarball into root, extracted next to it; torchvision's own reader (a plain unpickler) unused
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            torchvision.datasets.utils.download_and_extract_archive(
                cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5
            )
    except (RuntimeError, OSError, ValueError) as e:
        raise AttnsearchError(
            f"{name}: download into {root} failed ({one_line(e)}); place {_hint(name)} there"
        ) from None
    found = _find(name, root)
    if found is None:
        raise AttnsearchError(f"{name}: the download finished but {_missing(name, root)}")
    return found


# --- reading --------------------------------------------------------------------------------------------------


def _load_idx(spec: DataSpec, where: Path | tuple[Path, ...], idx_set: _IdxSet, *, test: bool) -> Dataset:
    n = len(idx_set.classes)
    test_split: tuple[Tensor, Tensor] | None = None
    if isinstance(where, Path):  # torchvision's older processed/ folder
        x, y = _read_legacy(where / _LEGACY[0], n)
        tx, ty = _read_legacy(where / _LEGACY[1], n)  # one file: counting its images means reading it
        test_split = (tx, ty) if test else None
        test_images = int(ty.shape[0])
    else:
        images, labels, test_images_file, test_labels_file = where
        x, y = _read_pair(images, labels, n)
        if test:
            test_split = _read_pair(test_images_file, test_labels_file, n)
            test_images = int(test_split[1].shape[0])
        else:
            test_images = idx_count(test_images_file)
            _same_count(test_images, idx_count(test_labels_file), test_images_file, test_labels_file)
    t, v, split = held_out(spec, y, spec.dataset)
    return finish(spec, x[t], y[t], x[v], y[v], idx_set.classes, split=split, test=test_split, test_images=test_images)


def _read_pair(images: Path, labels: Path, n_classes: int) -> tuple[Tensor, Tensor]:
    x = read_idx(images, ndim=3)[:, None]  # (N, 1, H, W)
    y = read_idx(labels, ndim=1).to(torch.int64)
    _same_count(x.shape[0], y.shape[0], images, labels)
    _check_labels(y, n_classes, labels)
    return x, y


def _same_count(n_images: int, n_labels: int, images: Path, labels: Path) -> None:
    if n_images != n_labels:
        raise AttnsearchError(f"{labels} holds {n_labels} labels but {images} holds {n_images} images")


def _check_labels(y: Tensor, n_classes: int, path: Path) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise AttnsearchError(f"{path}: a label is outside 0..{n_classes - 1}")


def _read_legacy(path: Path, n_classes: int) -> tuple[Tensor, Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file raises almost anything, in many lines
        raise AttnsearchError(
            f"{path} is incomplete, corrupted or not plain tensors (torch.load with weights_only=True refused it); "
            "place a fresh copy there"
        ) from None
    ok = isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    if not ok or data[0].dtype != torch.uint8 or data[0].ndim != 3 or data[1].shape != (data[0].shape[0],):
        raise AttnsearchError(f"{path} is not torchvision's pair of images (uint8, N x H x W) and N labels")
    y = data[1].to(torch.int64)
    _check_labels(y, n_classes, path)
    return data[0][:, None], y


def _load_cifar(spec: DataSpec, where: Path | tuple[Path, ...], layout: CifarLayout, *, test: bool) -> Dataset:
    assert isinstance(where, Path)
    raw = read_cifar(where, layout, test=test)
    t, v, split = held_out(spec, raw.y, spec.dataset)
    test_split = (raw.test_x, raw.test_y) if raw.test_x is not None and raw.test_y is not None else None
    return finish(
        spec,
        raw.x[t],
        raw.y[t],
        raw.x[v],
        raw.y[v],
        raw.classes,
        split=split,
        test=test_split,
        test_images=raw.test_count,
    )
