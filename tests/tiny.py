"""The tiny space the tests build on: one definition, and its variants written as changes to it.

Tests take it through the ``tiny_space`` and ``tiny_space_file`` fixtures (conftest.py). A helper module that no
fixture reaches (dashboard/scenario.py) imports it from here: there are two conftest.py files, so ``conftest`` is
not a name to import from.
"""

from __future__ import annotations

import copy
from typing import Any

SPACE: dict[str, Any] = {
    "name": "tiny",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["none", "se", "cbam"], "block5": ["none", "eca"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 128, "val_size": 64},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
    "search": {"sampler": "random", "n_trials": 3, "pruner": "none"},
    "execution": {"threads": 1},
}
REPLACED = ("slots", "modules")  # a change to these is the whole section, not keys merged into it


def space(**changes: Any) -> dict[str, Any]:
    """A fresh copy of SPACE with each change merged into its section when both are dicts, else set in its place.

    >>> space(train={"epochs": 1}, slots={"block3": ["se"]})["train"], space(slots={"block3": ["se"]})["slots"]
    ({'epochs': 1, 'batch_size': 32, 'lr': 0.05}, {'block3': ['se']})
    """
    data = copy.deepcopy(SPACE)
    for key, value in copy.deepcopy(changes).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in REPLACED:
            data[key].update(value)
        else:
            data[key] = value
    return data
