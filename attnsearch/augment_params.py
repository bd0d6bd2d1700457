"""The parameters of the batched augmentations (``train.augment_params``): their defaults, checks and stored form.

Torch-free, so that a space file is checked without importing torch. The augmentations themselves live in
:mod:`attnsearch.data.augment`. A recipe stores only the parameters written in its space file, as sorted
``(name, ((key, value), ...))`` pairs (hashable, order-free); a key left out takes its default from
:data:`AUGMENT_PARAMS`:

- ``resized_crop``: ``scale`` (area fraction of the crop, 0 < low <= high <= 1) and ``ratio`` (aspect ratio, 0 <
  low <= high), torchvision's and kornia's ``RandomResizedCrop`` defaults (0.08, 1.0) and (3/4, 4/3);
- ``color_jitter``: ``brightness``, ``contrast``, ``saturation`` (>= 0: a factor drawn from [max(0, 1 - v), 1 + v])
  and ``hue`` (0 to 0.5: a shift drawn from [-v, v] of a full turn), as torchvision's ``ColorJitter`` defines them;
  defaults 0.4 (timm's usual ``color_jitter=0.4``) and hue 0.1;
- ``mixup``: ``alpha`` > 0, lambda ~ Beta(alpha, alpha) (Zhang et al., ICLR 2018, arXiv 1710.09412; 0.2, the
  value of their ImageNet runs and of torchvision's classification reference);
- ``cutmix``: ``alpha`` > 0, the box's target area fraction 1 - lambda with lambda ~ Beta(alpha, alpha) (Yun et al.,
  ICCV 2019, arXiv 1905.04899; 1.0, their CIFAR and ImageNet value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["AUGMENT_PARAMS", "Pairs", "augment_params", "check_augment_params", "params_mapping", "params_pairs"]

AUGMENT_PARAMS: dict[str, dict[str, Any]] = {
    "resized_crop": {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)},
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "mixup": {"alpha": 0.2},
    "cutmix": {"alpha": 1.0},
}

Pairs = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # the stored form: ((name, ((key, value), ...)), ...)


def params_pairs(value: Any) -> Any:
    """A mapping ``{name: {key: value}}`` (as a space file or JSON writes it) as sorted pairs, lists as tuples and
    integers as floats (``alpha: 1`` and ``alpha: 1.0`` are one recipe); pairs already made are returned as they
    are. A ValueError for anything else (names and values are checked by :func:`check_augment_params`).

    Example:
        >>> params_pairs({"mixup": {"alpha": 1}, "resized_crop": {"scale": [0.6, 1]}})
        (('mixup', (('alpha', 1.0),)), ('resized_crop', (('scale', (0.6, 1.0)),)))
    """
    if isinstance(value, tuple):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping {{augmentation: {{key: value}}}}, got {_written(value)}")
    for name, keys in value.items():
        if not isinstance(keys, Mapping):
            raise ValueError(f"{name}: must be a mapping {{key: value}}, got {_written(keys)}")
    return tuple(
        sorted((name, tuple(sorted((k, _number(v)) for k, v in keys.items()))) for name, keys in value.items())
    )


def _number(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_number(v) for v in value)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def params_mapping(pairs: Pairs) -> dict[str, dict[str, Any]]:
    """The stored pairs back as the mapping a space file or ``trial.json`` holds (tuples as lists).

    Example:
        >>> params_mapping(params_pairs({"resized_crop": {"scale": [0.6, 1.0]}}))
        {'resized_crop': {'scale': [0.6, 1.0]}}
    """
    return {name: {k: list(v) if isinstance(v, tuple) else v for k, v in keys} for name, keys in pairs}


def augment_params(pairs: Pairs, name: str) -> dict[str, Any]:
    """The parameters augmentation ``name`` runs with: its defaults, overridden by those in ``pairs``.

    Example:
        >>> augment_params(params_pairs({"color_jitter": {"hue": 0.0}}), "color_jitter")
        {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.0}
    """
    return {**AUGMENT_PARAMS[name], **dict(dict(pairs).get(name, ()))}


def check_augment_params(pairs: Any, augment: Iterable[str] | None = None) -> Any:
    """``pairs`` (see :func:`params_pairs`) if every name, key and value is valid, else a ValueError of one line
    that starts with the key path (``mixup.alpha: must be greater than 0, got -1.0``). With ``augment`` (the
    recipe's list), parameters of an augmentation it does not list are refused too.

    Example:
        >>> check_augment_params(params_pairs({"mixup": {"beta": 1}}))
        Traceback (most recent call last):
        ...
        ValueError: mixup.beta: unknown key; valid: alpha
    """
    for name, keys in pairs:
        if name not in AUGMENT_PARAMS:
            raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENT_PARAMS)}")
        if augment is not None and name not in augment:
            raise ValueError(f"{name}: parameters of an augmentation that train.augment does not list")
        for key, value in keys:
            if key not in AUGMENT_PARAMS[name]:
                raise ValueError(f"{name}.{key}: unknown key; valid: {', '.join(AUGMENT_PARAMS[name])}")
            problem = _problem(name, key, value)
            if problem:
                raise ValueError(f"{name}.{key}: {problem}, got {_written(value)}")
    return pairs


def _problem(name: str, key: str, value: Any) -> str | None:
    """What is wrong with one value, or None."""
    if name == "resized_crop":
        if not (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)):
            return "must be a pair of numbers [low, high]"
        low, high = value
        if key == "scale" and not 0 < low <= high <= 1:
            return "must satisfy 0 < low <= high <= 1"
        if key == "ratio" and not 0 < low <= high:
            return "must satisfy 0 < low <= high"
        return None
    if not _is_number(value):
        return "must be a number"
    if key == "hue" and not 0 <= value <= 0.5:
        return "must be between 0 and 0.5"
    if name == "color_jitter" and value < 0:
        return "must be greater than or equal to 0"
    if key == "alpha" and value <= 0:
        return "must be greater than 0"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _written(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)
