"""Where the images come from: the ``data:`` section of a run turned into an in-memory ``Dataset``.

Sources: ``shapes`` (generated, nothing to download), ``digits`` (scikit-learn's bundled 8x8 digits),
``cifar10``, ``cifar100``, ``mnist`` and ``fashion_mnist`` (torchvision's on-disk formats; their train split trains,
their test split validates), and ``imagefolder`` (one sub-folder of images per class, decoded once and cached).

Each source has a planner that validates the spec cheaply (names, folders, files present, optional packages) and
returns the loader that does the heavy work. ``check_data`` runs only the planner and ``load_dataset`` runs both,
so the two raise the same messages. Every error about the data is a one-line ``AttnsearchError``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..candidate import DataSpec
from ..errors import AttnsearchError
from .dataset import Dataset
from .shapes import SHAPE_CLASSES, make_shapes

__all__ = ["DATASETS", "check_data", "load_dataset"]

DATASETS: tuple[str, ...] = ("shapes", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")

_SHAPES_TRAIN = 10_000  # default split sizes of the generated dataset
_SHAPES_VAL = 2_000
_IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
_CACHE_DIR = ".attnsearch-cache"
_CACHE_VERSION = "attnsearch-imagefolder-v1"  # part of the key: bump when decoding changes
_RESIZE_CHUNK = 4096  # images resized together: bounds the float copy


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
        return _plan_imagefolder(spec)
    return _plan_torchvision(spec, _TORCHVISION[spec.dataset])


def _check_fraction(spec: DataSpec) -> None:
    if not 0.0 < spec.val_fraction < 1.0:
        raise AttnsearchError(f"data.val_fraction must be between 0 and 1 (exclusive), got {spec.val_fraction!r}")


def _derive_seed(seed: int, tag: str) -> int:
    # independent streams for the different random choices made from one user seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:8], "little") >> 1


def _finish(spec: DataSpec, x: Tensor, y: Tensor, vx: Tensor, vy: Tensor, classes: tuple[str, ...]) -> Dataset:
    # caps first (cheaper resizing), then uint8 RGB at the requested size
    keep = _cap(y, spec.train_size, _derive_seed(spec.seed, "train-cap"))
    if keep is not None:
        x, y = x[keep], y[keep]
    vkeep = _cap(vy, spec.val_size, _derive_seed(spec.seed, "val-cap"))
    if vkeep is not None:
        vx, vy = vx[vkeep], vy[vkeep]
    return Dataset(spec.dataset, _to_rgb(x, spec.image_size), y, _to_rgb(vx, spec.image_size), vy, classes)


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


def _split(y: Tensor, fraction: float, seed: int, what: str) -> tuple[Tensor, Tensor]:
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


# --- shapes ---------------------------------------------------------------------------------------------------


def _plan_shapes(spec: DataSpec) -> Callable[[], Dataset]:
    def load() -> Dataset:
        x, y = make_shapes(spec.train_size or _SHAPES_TRAIN, spec.image_size, seed=spec.seed)
        vx, vy = make_shapes(spec.val_size or _SHAPES_VAL, spec.image_size, seed=_derive_seed(spec.seed, "shapes-val"))
        return Dataset("shapes", x, y, vx, vy, SHAPE_CLASSES)

    return load


# --- digits ---------------------------------------------------------------------------------------------------


def _plan_digits(spec: DataSpec) -> Callable[[], Dataset]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AttnsearchError("digits needs scikit-learn: pip install 'attnsearch[digits]'") from None
    _check_fraction(spec)

    def load() -> Dataset:
        bunch = load_digits()
        images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), values 0..16
        x = (images * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)[:, None]
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        t, v = _split(y, spec.val_fraction, _derive_seed(spec.seed, "split"), "digits")
        return _finish(spec, x[t], y[t], x[v], y[v], tuple(str(c) for c in bunch.target_names))

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
                    f"{name} under {root}: {what} ({_one_line(e)}); place a fresh copy of {src.hint} there"
                ) from None
            data = torch.as_tensor(ds.data)
            data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # grey (N,H,W) or HWC
            splits.append((data, torch.as_tensor(ds.targets, dtype=torch.int64), tuple(str(c) for c in ds.classes)))
        (x, y, classes), (vx, vy, _) = splits
        return _finish(spec, x, y, vx, vy, classes)

    return load


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# --- imagefolder ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # posix paths relative to root, sorted by class then path
    labels: tuple[int, ...]


def _scan(path: str, what: str) -> _Folder:
    root = Path(path).expanduser()
    if not root.exists():
        raise AttnsearchError(f"imagefolder {what} {root} does not exist")
    if not root.is_dir():
        raise AttnsearchError(f"imagefolder {what} {root} is not a folder")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise AttnsearchError(
            f"imagefolder {what} {root} has no class folders: put each class's images in its own sub-folder, "
            f"e.g. {root / 'cat' / '001.jpg'}"
        )
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images_under(root, name)
        if not found:
            raise AttnsearchError(
                f"imagefolder class folder {root / name} has no images ({', '.join(_IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [label] * len(found)
    return _Folder(root, tuple(classes), tuple(files), tuple(labels))


def _images_under(root: Path, name: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        found += [
            (rel / f).as_posix()
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(_IMAGE_EXTENSIONS)  # skips e.g. macOS "._x.jpg"
        ]
    return sorted(found)


def _plan_imagefolder(spec: DataSpec) -> Callable[[], Dataset]:
    if spec.root is None:
        raise AttnsearchError("imagefolder needs data.root: a folder with one sub-folder of images per class")
    train = _scan(spec.root, "root")
    val = _scan(spec.val_root, "val_root") if spec.val_root is not None else None
    if val is not None and val.classes != train.classes:
        missing = sorted(set(train.classes) - set(val.classes))
        extra = sorted(set(val.classes) - set(train.classes))
        raise AttnsearchError(
            f"imagefolder val_root {val.root} has different class folders from root {train.root}: "
            f"missing {missing}, extra {extra}"
        )
    split: tuple[Tensor, Tensor] | None = None
    if val is None:
        _check_fraction(spec)
        labels = torch.tensor(train.labels, dtype=torch.int64)
        split = _split(labels, spec.val_fraction, _derive_seed(spec.seed, "split"), f"imagefolder root {train.root}")

    def load() -> Dataset:
        x, y = _load_folder(train, spec.image_size)
        if val is None:
            assert split is not None
            t, v = split
            return _finish(spec, x[t], y[t], x[v], y[v], train.classes)
        vx, vy = _load_folder(val, spec.image_size)
        return _finish(spec, x, y, vx, vy, train.classes)

    return load


def _cache_key(folder: _Folder, size: int) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}\n{size}\n".encode())
    for rel in folder.files:
        st = (folder.root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_dirs(folder: _Folder) -> list[Path]:
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnsearch" / "imagefolder"
    return [folder.root / _CACHE_DIR, user]


def _load_folder(folder: _Folder, size: int) -> tuple[Tensor, Tensor]:
    key = _cache_key(folder, size)
    name = f"{size}-{key}.pt"
    dirs = _cache_dirs(folder)
    for d in dirs:
        cached = _read_cache(d / name, key, len(folder.files), size)
        if cached is not None:
            return cached
    x = _decode_all(folder, size)
    y = torch.tensor(folder.labels, dtype=torch.int64)
    _write_cache(dirs, name, {"key": key, "x": x, "y": y})
    return x, y


def _read_cache(path: Path, key: str, n: int, size: int) -> tuple[Tensor, Tensor] | None:
    if not path.is_file():
        return None
    try:
        # weights_only: a cache file is data, never code, even if someone replaced it
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        warnings.warn(f"ignoring unreadable image cache {path} ({_one_line(e)}); rebuilding it", stacklevel=2)
        return None
    ok = (
        isinstance(obj, dict)
        and obj.get("key") == key
        and isinstance(obj.get("x"), Tensor)
        and isinstance(obj.get("y"), Tensor)
        and obj["x"].dtype == torch.uint8
        and tuple(obj["x"].shape) == (n, 3, size, size)
        and obj["y"].dtype == torch.int64
        and tuple(obj["y"].shape) == (n,)
    )
    if not ok:
        warnings.warn(f"ignoring image cache {path} that does not match its folder; rebuilding it", stacklevel=2)
        return None
    return obj["x"], obj["y"]


def _write_cache(dirs: list[Path], name: str, obj: dict[str, Any]) -> None:
    for d in dirs:
        tmp: str | None = None
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
            os.close(fd)
            torch.save(obj, tmp)
            os.replace(tmp, d / name)  # atomic: a concurrent reader sees the old file or the whole new one
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            continue
        if d == dirs[0]:
            # the folder's own cache holds only this folder: older keys at this size are stale copies
            prefix = name.split("-", 1)[0] + "-"
            for old in d.glob(f"{prefix}*.pt"):
                if old.name != name:
                    old.unlink(missing_ok=True)
        return
    warnings.warn(f"could not write the image cache to any of {', '.join(map(str, dirs))}", stacklevel=2)


def _decode_all(folder: _Folder, size: int) -> Tensor:
    out = torch.empty((len(folder.files), 3, size, size), dtype=torch.uint8)
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))  # PIL releases the GIL while decoding
    try:
        for i, img in enumerate(pool.map(lambda rel: _decode(folder.root / rel, size), folder.files)):
            out[i] = img
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _decode(path: Path, size: int) -> Tensor:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers size x size
            rgb = ImageOps.fit(im.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
            arr = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    except Exception as e:
        raise AttnsearchError(f"imagefolder cannot read image {path}: {_one_line(e)}") from None
    return arr.view(size, size, 3).permute(2, 0, 1)
