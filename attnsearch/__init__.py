"""attnsearch: search which attention module belongs after which block of a VGG or DenseNet.

Example:
    >>> import attnsearch as a
    >>> model = a.build_model("vgg16_bn", {"block3": "cbam"}, num_classes=10, width=0.25, head="compact",
    ...                       image_size=32)
    >>> a.measure_costs(model, image_size=32)["params"] > 0
    True

A study, scripted (each step is also a command: ``attnsearch run``, ``report``, ``export``, ``replay``):

    >>> space = a.load_space("search_spaces/quickstart.yaml")  # doctest: +SKIP
    >>> outcome = a.run_search(space, n_trials=4)  # doctest: +SKIP
    >>> results = a.StudyResults.from_store(outcome.folder)  # doctest: +SKIP
    >>> [record.label for record in results.ranked()][:2]  # doctest: +SKIP
    ['block3=se block5=eca', 'block5=self_attention']
    >>> a.export_trial(outcome.folder, trial="best").code  # doctest: +SKIP
    PosixPath('results/quickstart/exports/trial_2.py')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attention import create_module, list_modules, module_info, register_module  # noqa: F401
    from .backbones import Slot, list_backbones, register_backbone  # noqa: F401
    from .candidate import Candidate  # noqa: F401
    from .costs import measure_costs  # noqa: F401
    from .errors import AttnsearchError  # noqa: F401
    from .export import export_trial  # noqa: F401
    from .dataset_registry import register_dataset  # noqa: F401
    from .model import build_model, list_slots  # noqa: F401
    from .plugins import load_plugins, loaded_plugins, plugin_of  # noqa: F401
    from .record import TrialRecord  # noqa: F401
    from .replay import replay_trial  # noqa: F401
    from .results import StudyResults  # noqa: F401
    from .search.runner import run_search  # noqa: F401
    from .space import load_space  # noqa: F401

__version__ = "0.1.0"

# Public name -> the submodule that defines it. Imported on first use, so that `attnsearch --help` and other
# paths that need no model do not pay for importing torch (several seconds).
_EXPORTS = {
    "AttnsearchError": "errors",
    "Candidate": "candidate",
    "Slot": "backbones",
    "StudyResults": "results",
    "TrialRecord": "record",
    "build_model": "model",
    "create_module": "attention",
    "export_trial": "export",
    "list_backbones": "backbones",
    "list_modules": "attention",
    "list_slots": "model",
    "load_plugins": "plugins",
    "load_space": "space",
    "loaded_plugins": "plugins",
    "measure_costs": "costs",
    "module_info": "attention",
    "plugin_of": "plugins",
    "register_backbone": "backbones",
    "register_dataset": "dataset_registry",
    "register_module": "attention",
    "replay_trial": "replay",
    "run_search": "search.runner",
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
