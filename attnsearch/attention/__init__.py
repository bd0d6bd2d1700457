"""Attention modules, one file per mechanism, each registered under the key users write in YAML."""

from __future__ import annotations

# Imported for their registration, in the order `attnsearch modules` lists them.
from . import se  # noqa: F401
from . import eca  # noqa: F401
from . import cbam  # noqa: F401
from . import triplet  # noqa: F401
from . import coord  # noqa: F401
from . import self_attention  # noqa: F401
from . import linear_attention  # noqa: F401
from . import mhsa  # noqa: F401
from . import gate  # noqa: F401  (a placement of its own kind: see attnsearch.gating)
from .registry import (
    ModuleInfo,
    check_params,
    create_module,
    effective_params,
    list_modules,
    module_info,
    register_module,
)

__all__ = [
    "ModuleInfo",
    "check_params",
    "create_module",
    "effective_params",
    "list_modules",
    "module_info",
    "register_module",
]
