"""What every benchmark saves: its figures as JSON under ``results/benchmarks/``, with the machine that made them.

The files are standard JSON (a NaN or an infinity is written as null, :func:`attnsearch.schema.plain`), as browsers,
Node and jq read it."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["BENCH_FOLDER", "load_average", "machine", "save_json"]

BENCH_FOLDER = Path("results") / "benchmarks"


def machine() -> dict[str, Any]:
    """The machine and software a figure was measured with: CPU model, cores, load, GPU, versions.

    Example:
        >>> sorted(machine())[:3]
        ['cores', 'cpu', 'cuda']
    """
    import optuna
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none): how busy the machine was.

    Example:
        >>> len(load_average() or [0, 0, 0])
        3
    """
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def save_json(name: str, data: dict[str, Any], folder: Path | str = BENCH_FOLDER) -> Path:
    """Write ``data`` and :func:`machine` to ``folder/<name>.json`` (atomically, standard JSON: NaN and infinities
    as null; an object JSON has no type for as its ``str``) and return the path.

    Example:
        >>> import tempfile
        >>> save_json("demo", {"ratio": 1.0}, tempfile.mkdtemp()).name
        'demo.json'
    """
    from ..schema import plain
    from ..search.store import atomic_write

    path = Path(folder) / f"{name}.json"
    text = json.dumps(plain({"benchmark": name, "machine": machine(), **data}), indent=2, default=str, allow_nan=False)
    atomic_write(path, text.encode() + b"\n")
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
