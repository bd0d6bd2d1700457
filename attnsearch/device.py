"""Device names as a user writes them (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked in one place.

The space file's ``execution.device``, ``attnsearch run --device``, ``replay --device`` and the benchmarks' ``--device``
all go through :func:`check_device`; :func:`resolve_device` turns a checked name into a ``torch.device`` on this
machine. Nothing here imports torch until a device is resolved, so checking a name stays cheap.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import AttnsearchError

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_PATTERN", "check_device", "resolve_device"]

DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"  # the one definition; the space file's validation uses it too


def check_device(name: str, *, allow_auto: bool = True) -> str:
    """``name`` when it is a device name attnsearch understands; an AttnsearchError (one line) otherwise.

    ``allow_auto=False`` refuses ``auto`` (a benchmark measures the device it is told).

    Example:
        >>> check_device("cuda:1")
        'cuda:1'
        >>> check_device("gpu")
        Traceback (most recent call last):
        ...
        attnsearch.errors.AttnsearchError: device 'gpu': must be auto, cpu, cuda or cuda:N
    """
    if not isinstance(name, str) or re.fullmatch(DEVICE_PATTERN, name) is None or (name == "auto" and not allow_auto):
        valid = "auto, cpu, cuda or cuda:N" if allow_auto else "cpu, cuda or cuda:N"
        raise AttnsearchError(f"device {name!r:.40}: must be {valid}")
    return name


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for a device name: ``auto`` is CUDA when this machine has it, else the CPU.

    Raises AttnsearchError for a name :func:`check_device` refuses, or for CUDA on a machine without it.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AttnsearchError(f"device {name}: CUDA is not available on this machine")
    return torch.device(name)
