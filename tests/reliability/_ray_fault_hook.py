"""Faults for test_ray_faults, planted in every worker process of that test's Ray by ``worker_process_setup_hook``.

Ray runs ``install`` in each worker process as it starts, before any actor lives there. It breaks two attention
modules, but only inside ``train_model``: the cost pass (on the meta device, then timed on the trial's own device)
still works, so the faults are met where they are in real life, in training.

- CBAM raises a plain ``RuntimeError``;
- ECA raises ``torch.OutOfMemoryError``, as CUDA does.

And ``ray.get_gpu_ids`` says GPU 0, so that an actor believes it holds a GPU and the executor treats an OOM as a
CUDA one (leaked GPU memory). Nothing else sees the fake: the actor trains on the CPU, as its device says.
"""

from __future__ import annotations

import os
import sys

BUG = "a bug inside the module"
OOM = "CUDA out of memory. Tried to allocate 20.00 GiB"

_failure: str | None = "not installed"


def failure() -> str | None:
    """Why ``install`` did not plant the faults in this process; None when it did. Run it as a Ray task."""
    return _failure


def install() -> None:
    """Ray's setup hook. It never raises: a worker whose hook raises dies, and Ray starts another, forever."""
    global _failure
    try:
        _install()
    except Exception as err:
        _failure = f"{type(err).__name__}: {err}"
    else:
        _failure = None


def _in_training() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "train_model" and code.co_filename.endswith(os.path.join("attnsearch", "train.py")):
            return True
        frame = frame.f_back
    return False


def _install() -> None:
    import ray
    import torch

    from attnsearch.attention.cbam import CBAM
    from attnsearch.attention.eca import EfficientChannelAttention

    cbam, eca = CBAM.forward, EfficientChannelAttention.forward

    def broken(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta or not _in_training():
            return cbam(self, x)
        raise RuntimeError(BUG)

    def exhausted(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta or not _in_training():
            return eca(self, x)
        raise torch.OutOfMemoryError(OOM)

    CBAM.forward, EfficientChannelAttention.forward = broken, exhausted
    ray.get_gpu_ids = lambda: [0]
