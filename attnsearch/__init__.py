"""attnsearch: search which attention module belongs after which block of a VGG or DenseNet.

Example:
    >>> import attnsearch as a
    >>> model = a.build_model("vgg16_bn", {"block3": "cbam"}, num_classes=10, width=0.25, head="compact",
    ...                       image_size=32)
    >>> a.measure_costs(model, image_size=32)["params"] > 0
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attention import create_module, list_modules, module_info, register_module  # noqa: F401
    from .backbones import Slot, list_backbones  # noqa: F401
    from .costs import measure_costs  # noqa: F401
    from .model import build_model, list_slots  # noqa: F401

__version__ = "0.1.0"

# Public name -> the submodule that defines it. Imported on first use, so that `attnsearch --help` and other
# paths that need no model do not pay for importing torch (several seconds).
_EXPORTS = {
    "Slot": "backbones",
    "build_model": "model",
    "create_module": "attention",
    "list_backbones": "backbones",
    "list_modules": "attention",
    "list_slots": "model",
    "measure_costs": "costs",
    "module_info": "attention",
    "register_module": "attention",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attnsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
