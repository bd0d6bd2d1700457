"""LeCun's IDX files, the format MNIST and Fashion-MNIST are published in, read with gzip and torch.

The format (Y. LeCun, C. Cortes, C. Burges, "The MNIST database", section "File formats for the MNIST database",
http://yann.lecun.com/exdb/mnist/): a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
then the size of each dimension as a big-endian unsigned 32-bit integer, then the values in row-major order. MNIST
and Fashion-MNIST use type code 0x08 (unsigned byte) for both files: images of 3 dimensions (N, 28, 28), pixels
0 (background) to 255, and labels of 1 dimension (N,), values 0 to 9. Zalando's Fashion-MNIST repository and
Debian's ``dataset-fashion-mnist`` package ship the four files gzipped (``train-images-idx3-ubyte.gz``, ...).

Read here rather than by torchvision's readers, which want the files unzipped inside their own ``<Name>/raw/``
folder; a file whose name ends in ``.gz`` is decompressed in memory, nothing is written to disk.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path, ndim=1).tolist(), idx_count(path)
    ([7, 2, 1], 3)
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

from ..errors import AttnsearchError
from .prepare import one_line

__all__ = ["idx_count", "read_idx"]

_UBYTE = 0x08  # the type code of unsigned bytes, the only one MNIST-like files use


def read_idx(path: Path, *, ndim: int) -> Tensor:
    """The values of the unsigned-byte IDX file ``path`` (gzipped when its name ends in ``.gz``) as a uint8 tensor
    of ``ndim`` dimensions, shaped as its header says.

    Raises:
        AttnsearchError: one line naming the file when it cannot be read (a broken gzip stream, say), when its
            magic number is not that of unsigned bytes in ``ndim`` dimensions, or when it holds fewer or more
            bytes than its header promises (a truncated download).
    """
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise AttnsearchError(f"cannot read {path}: {one_line(e)}") from None
    dims = _header(path, raw, ndim)
    start = 4 + 4 * ndim
    expected = start + math.prod(dims)
    if len(raw) != expected:
        short = "truncated" if len(raw) < expected else "too long"
        raise AttnsearchError(
            f"{path} is {short}: {len(raw)} bytes where its header ({' x '.join(map(str, dims))} values) "
            f"promises {expected}"
        )
    if math.prod(dims) == 0:
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw[start:]), dtype=torch.uint8).reshape(dims)


def idx_count(path: Path) -> int:
    """The first dimension of the IDX file ``path`` (its number of images or labels), read from its header alone.

    Raises:
        AttnsearchError: as :func:`read_idx` for an unreadable file or a wrong magic number (any number of
            dimensions is accepted here).
    """
    try:
        with _open(path) as f:
            raw = f.read(8)
    except (OSError, EOFError, zlib.error) as e:
        raise AttnsearchError(f"cannot read {path}: {one_line(e)}") from None
    return _header(path, raw, None)[0]


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _header(path: Path, raw: bytes, ndim: int | None) -> tuple[int, ...]:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        magic = raw[:4].hex() or "nothing"
        raise AttnsearchError(
            f"{path} is not an IDX file of unsigned bytes: its magic number is {magic}, expected 0000080N"
        )
    if ndim is not None and raw[3] != ndim:
        raise AttnsearchError(f"{path} has {raw[3]} dimensions where {ndim} were expected")
    count = raw[3] if ndim is not None else 1  # idx_count needs the first size only
    if raw[3] == 0 or len(raw) < 4 + 4 * count:
        raise AttnsearchError(f"{path} is truncated: its header ends early")
    return struct.unpack(f">{count}I", raw[4 : 4 + 4 * count])
