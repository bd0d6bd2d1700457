"""The ``imagefolder`` source: one sub-folder of images per class, decoded once and cached.

Planning scans the folders (names and listing only: no decoding) and, without ``val_root``, draws the held-out
split. Loading decodes every image with PIL (shorter side resized, centre crop) in threads, and caches the uint8
tensors in a ``.pt`` file keyed by the decoding version, the size and every file's path, size and modification
time: in ``ROOT/.attnsearch-cache`` (which keeps only the latest key per size), or else in the user's cache folder.
A cache file that cannot be read or does not match its folder is ignored with a warning and rebuilt.
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
from torch import Tensor

from ..candidate import DataSpec
from ..errors import AttnsearchError
from .dataset import Dataset
from .prepare import finish, held_out, one_line

__all__ = ["plan_imagefolder"]

_IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
_CACHE_DIR = ".attnsearch-cache"
_CACHE_VERSION = "attnsearch-imagefolder-v1"  # part of the key: bump when decoding changes


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


def plan_imagefolder(spec: DataSpec) -> Callable[[bool], Dataset]:
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
    drawn: tuple[Tensor, Tensor, dict[str, Any]] | None = None
    if val is None:
        labels = torch.tensor(train.labels, dtype=torch.int64)
        drawn = held_out(spec, labels, f"imagefolder root {train.root}")

    def load(test: bool) -> Dataset:
        if test:
            raise AttnsearchError("imagefolder has no test split")
        x, y = _load_folder(train, spec.image_size)
        if drawn is not None:
            t, v, split = drawn
            return finish(spec, x[t], y[t], x[v], y[v], train.classes, split=split)
        assert val is not None
        vx, vy = _load_folder(val, spec.image_size)
        return finish(spec, x, y, vx, vy, train.classes, split={"validation": "val_root"})

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
        warnings.warn(f"ignoring unreadable image cache {path} ({one_line(e)}); rebuilding it", stacklevel=2)
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
        raise AttnsearchError(f"imagefolder cannot read image {path}: {one_line(e)}") from None
    return arr.view(size, size, 3).permute(2, 0, 1)
