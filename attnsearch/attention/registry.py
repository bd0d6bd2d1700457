"""The attention-module registry: the keys users write in a space file, mapped to module classes.

A module class registers itself with :func:`register_module`. Its constructor takes ``channels`` first
and keyword-only parameters after it; those keyword-only parameters, with their defaults and annotated
types, are the parameters a user may set for that key.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Callable

from torch import nn

from ..errors import AttnsearchError

__all__ = [
    "ModuleInfo",
    "NoAttention",
    "at_least",
    "create_module",
    "list_modules",
    "module_info",
    "register_module",
]

_M = TypeVar("_M", bound=type[nn.Module])


@dataclass(frozen=True)
class ModuleInfo:
    """What the registry knows of one key.

    Example:
        >>> module_info("se").params
        {'reduction': 16}
    """

    key: str
    cls: type[nn.Module]
    paper: str  # authors, title, venue
    arxiv: str  # arXiv id, "" when there is none
    params: dict[str, Any]  # keyword -> default
    types: dict[str, tuple[type, ...]]  # keyword -> accepted value types


_REGISTRY: dict[str, ModuleInfo] = {}


def at_least(minimum: int, **values: float) -> None:
    """A module's own check of its sizes: ValueError naming the first of ``values`` below ``minimum``.

    Example:
        >>> at_least(1, channels=64, reduction=0)
        Traceback (most recent call last):
        ...
        ValueError: reduction must be >= 1, got 0
    """
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _accepted_types(annotation: Any) -> tuple[type, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _accepted_types(arg))
    if annotation is None or annotation is type(None):
        return (type(None),)
    if annotation is float:  # an int is a fine float
        return (float, int)
    return (annotation,)


def register_module(key: str, *, paper: str, arxiv: str = "") -> Callable[[_M], _M]:
    """Class decorator that registers an attention module under ``key``."""

    def decorate(cls: _M) -> _M:
        if key in _REGISTRY:
            raise ValueError(f"attention module {key!r} is registered twice")
        hints = typing.get_type_hints(cls.__init__)
        params: dict[str, Any] = {}
        accepted: dict[str, tuple[type, ...]] = {}
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                params[name] = p.default
                accepted[name] = _accepted_types(hints[name])
        _REGISTRY[key] = ModuleInfo(key, cls, paper, arxiv, params, accepted)
        return cls

    return decorate


def list_modules() -> list[str]:
    """Registry keys in registration order, ``"none"`` first."""
    return list(_REGISTRY)


def module_info(key: str) -> ModuleInfo:
    """The registry entry for ``key``; an AttnsearchError lists the valid keys."""
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise AttnsearchError(f"unknown attention module {key!r}; valid: {', '.join(_REGISTRY)}") from None


def _type_name(accepted: tuple[type, ...]) -> str:
    return " or ".join(
        "null" if t is type(None) else t.__name__ for t in accepted if t is not int or float not in accepted
    )


def check_params(key: str, params: dict[str, Any]) -> None:
    """Raise an AttnsearchError naming the parameter when ``params`` is not valid for ``key``."""
    info = module_info(key)
    for name, value in params.items():
        if name not in info.params:
            valid = ", ".join(info.params) or "none"
            raise AttnsearchError(f"{key}: unknown parameter {name!r}; valid: {valid}")
        accepted = info.types[name]
        # bool is an int subclass in Python: never accept True where a number is meant
        if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            raise AttnsearchError(f"{key}: {name} must be {_type_name(accepted)}, got {value!r}")


def create_module(key: str, channels: int, **params: Any) -> nn.Module:
    """Build the attention module ``key`` for a feature map with ``channels`` channels.

    Example:
        >>> import torch
        >>> create_module("cbam", 64, reduction=8)(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{key}: channels must be a positive integer, got {channels!r}")
    info = module_info(key)
    check_params(key, params)
    try:
        return info.cls(channels, **params)
    except ValueError as err:  # a constructor's own check of a parameter's value: the user's value
        raise AttnsearchError(f"{key}: {err}") from None


@register_module("none", paper="-")
class NoAttention(nn.Identity):
    """Placing nothing: the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
