"""A replay's budget: the recipe and data fields ``attnsearch replay`` may change, checked and applied.

Overrides turn a replay from a check of its record into "train it properly": more epochs, the whole training set
(``train_size="all"``), another batch size or learning rate. :func:`check_overrides` validates them (one
AttnsearchError line each), :func:`apply_overrides` makes the candidate that trains, :func:`searched_values` says
what the search used instead, :func:`folder_tag` names the replay's folder and :func:`recorded_overrides` gives the
numbers its ``trial.json`` keeps. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .candidate import Candidate
from .errors import AttnsearchError

__all__ = [
    "ALL",
    "DATA_OVERRIDES",
    "OVERRIDES",
    "apply_overrides",
    "changes_value",
    "check_overrides",
    "folder_tag",
    "parse_size",
    "recorded_overrides",
    "searched_values",
]

ALL = "all"  # a split size meaning every image of the split (DataSpec's None)
# field -> its part of a replay folder's name; the recipe's first, then the data's
OVERRIDES = {"epochs": "e", "batch_size": "b", "lr": "lr", "train_size": "train", "val_size": "val"}
DATA_OVERRIDES = ("train_size", "val_size")  # DataSpec fields; the others are TrainRecipe fields


def parse_size(text: str, option: str = "--train-size") -> int | str:
    """A split size as typed: a positive integer, or ``"all"`` (any case) for the whole split.

    Raises:
        AttnsearchError: anything else, naming ``option``.

    Example:
        >>> parse_size("5000"), parse_size("ALL")
        (5000, 'all')
        >>> parse_size("lots")
        Traceback (most recent call last):
        ...
        attnsearch.errors.AttnsearchError: --train-size must be a positive integer or 'all', got 'lots'
    """
    value = text.strip()
    if value.lower() == ALL:
        return ALL
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise AttnsearchError(f"{option} must be a positive integer or 'all', got {text!r:.40}")


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides that change something, checked: ``epochs`` and ``batch_size`` positive integers, ``lr`` a
    positive finite number, ``train_size`` / ``val_size`` a positive integer or ``"all"``. A None value means
    "not given" and is dropped.

    Raises:
        AttnsearchError: an unknown field or a bad value, in one line.

    Example:
        >>> check_overrides({"epochs": 15, "lr": None, "train_size": "all"})
        {'epochs': 15, 'train_size': 'all'}
        >>> check_overrides({"val_size": -1})
        Traceback (most recent call last):
        ...
        attnsearch.errors.AttnsearchError: --val-size must be a positive integer or 'all', got -1
    """
    checked: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in OVERRIDES:
            raise AttnsearchError(f"unknown override {name!r}; valid: {', '.join(OVERRIDES)}")
        if value is None:
            continue
        option = f"--{name.replace('_', '-')}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in DATA_OVERRIDES:
            if isinstance(value, str):
                value = parse_size(value, option)
            elif not (number and isinstance(value, int) and value >= 1):
                raise AttnsearchError(f"{option} must be a positive integer or 'all', got {value!r:.40}")
        elif name == "lr":
            if not (number and math.isfinite(value) and value > 0):
                raise AttnsearchError(f"--lr must be a positive number, got {value!r:.40}")
            value = float(value)
        elif not (number and isinstance(value, int) and value >= 1):
            raise AttnsearchError(f"{option} must be a positive integer, got {value!r:.40}")
        checked[name] = value
    return {name: checked[name] for name in OVERRIDES if name in checked}  # one order: the folder's name


def apply_overrides(candidate: Candidate, changes: Mapping[str, Any]) -> Candidate:
    """``candidate`` with ``changes`` (from :func:`check_overrides`) applied; ``"all"`` becomes DataSpec's None.
    An ``epochs`` change also drops a step budget, which would overrule it.

    Example:
        >>> c = apply_overrides(Candidate(), {"epochs": 15, "train_size": "all", "val_size": 500})
        >>> c.train.epochs, c.data.train_size, c.data.val_size
        (15, None, 500)
    """
    recipe = {k: v for k, v in changes.items() if k not in DATA_OVERRIDES}
    data = {k: None if v == ALL else v for k, v in changes.items() if k in DATA_OVERRIDES}
    if not recipe and not data:
        return candidate
    train = replace(candidate.train, **recipe)
    if "epochs" in recipe:
        train = replace(train, steps=None)
    return replace(candidate, train=train, data=replace(candidate.data, **data))


def changes_value(candidate: Candidate, name: str, value: Any) -> bool:
    """Whether overriding ``name`` with ``value`` (checked) trains ``candidate`` differently: a value equal to the
    searched one does not, except ``epochs`` over a step budget (the override drops the steps).

    Example:
        >>> changes_value(Candidate(), "epochs", 3), changes_value(Candidate(), "epochs", 4)
        (False, True)
    """
    if name == "epochs" and candidate.train.steps is not None:
        return True
    return searched_values(candidate, {name: value})[name] != value


def searched_values(candidate: Candidate, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The values the search trained ``candidate`` with, for each field ``changes`` overrides (``"all"`` for a
    split size that was not capped).

    Example:
        >>> searched_values(Candidate(), {"epochs": 15, "train_size": "all"})
        {'epochs': 3, 'train_size': 'all'}
    """
    found = {}
    for name in changes:
        section = candidate.data if name in DATA_OVERRIDES else candidate.train
        value = getattr(section, name)
        found[name] = ALL if value is None and name in DATA_OVERRIDES else value
    return found


def folder_tag(changes: Mapping[str, Any]) -> str:
    """The part of a replay folder's name after the trial number, e.g. ``e15-trainall``.

    Example:
        >>> folder_tag({"epochs": 15, "lr": 0.02, "train_size": "all", "val_size": 500})
        'e15-lr0.02-trainall-val500'
    """
    return "-".join(f"{OVERRIDES[name]}{v if v == ALL else format(v, 'g')}" for name, v in changes.items())


def recorded_overrides(changes: Mapping[str, Any], split: Mapping[str, Any]) -> dict[str, float]:
    """The overrides as a replay's ``trial.json`` keeps them: numbers only, so ``"all"`` is written as the number
    of images the split held (``split``: the replay's ``Dataset.split``); the record's candidate keeps the cap
    itself (None).

    Example:
        >>> recorded_overrides({"epochs": 15, "train_size": "all"}, {"train_images": 48000, "val_images": 12000})
        {'epochs': 15, 'train_size': 48000}
    """
    counts = {"train_size": "train_images", "val_size": "val_images"}
    found = {name: split.get(counts[name]) if value == ALL else value for name, value in changes.items()}
    # a count the split does not give is left out: the candidate still says what trained
    return {name: value for name, value in found.items() if isinstance(value, (int, float))}
