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
from collections.abc import Callable, Mapping

from torch import nn

from ..errors import AttnsearchError

__all__ = [
    "ModuleInfo",
    "NoAttention",
    "at_least",
    "create_module",
    "effective_params",
    "effective_reduction",
    "list_modules",
    "module_info",
    "reduction_rule",
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


def register_module(
    key: str, *, paper: str, arxiv: str = "", params: Mapping[str, Any] | None = None
) -> Callable[[_M], _M]:
    """Class decorator that registers an attention module under ``key``: the public way in for plug-ins too.

    The class takes ``channels`` first and its parameters as keyword-only arguments with defaults; those are the
    parameters a space file may set (types from their annotations, else from their defaults). ``params``, when
    given, names the ones offered (``{name: default}``, each default equal to the constructor's). Raises an
    AttnsearchError for a key registered twice or a ``params`` that does not match the constructor.

    A class whose parameters can collapse at some widths (a reduction floored to a hidden width of 1, a head count
    cut to a divisor) may define a classmethod ``effective_params(cls, channels: int, **params) -> dict``: the
    parameters as the module will use them at ``channels``, in one canonical form, so that two values building the
    same module give equal dicts (see :func:`effective_params`). Without it, the parameters are taken as written.

    Example:
        >>> @register_module("doc_scale", paper="-", params={"factor": 2.0})
        ... class Scale(nn.Module):
        ...     def __init__(self, channels: int, *, factor: float = 2.0) -> None:
        ...         super().__init__()
        ...         self.factor = factor
        ...     def forward(self, x):
        ...         return x * self.factor
        >>> module_info("doc_scale").params
        {'factor': 2.0}
        >>> _REGISTRY.pop("doc_scale").key
        'doc_scale'
    """

    def decorate(cls: _M) -> _M:
        if key in _REGISTRY:
            raise AttnsearchError(f"attention module {key!r} is registered twice")
        found, accepted = _keyword_params(key, cls)
        if params is not None:
            for name, default in params.items():
                if name not in found:
                    raise AttnsearchError(
                        f"{key}: params names {name!r}, not a keyword-only argument of {cls.__name__}"
                    )
                if found[name] is not inspect.Parameter.empty and found[name] != default:
                    raise AttnsearchError(
                        f"{key}: params gives {name}={default!r}, the constructor's default is {found[name]!r}"
                    )
            left = [n for n, d in found.items() if n not in params and d is inspect.Parameter.empty]
            if left:
                raise AttnsearchError(f"{key}: {left[0]} has no default and is not in params")
            found = {name: params[name] for name in params}
            accepted = {name: accepted[name] for name in params}
        _REGISTRY[key] = ModuleInfo(key, cls, paper, arxiv, found, accepted)
        return cls

    return decorate


def _keyword_params(key: str, cls: type) -> tuple[dict[str, Any], dict[str, tuple[type, ...]]]:
    """The keyword-only arguments of ``cls`` with their defaults and accepted types; ``channels`` must come first."""
    try:
        signature = inspect.signature(cls.__init__)
        hints = typing.get_type_hints(cls.__init__)
    except (TypeError, ValueError, NameError) as err:
        raise AttnsearchError(f"{key}: cannot read the constructor of {cls.__name__}: {err}") from None
    positional = [
        p for p in list(signature.parameters.values())[1:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not positional:
        raise AttnsearchError(f"{key}: {cls.__name__} must take the number of channels as its first argument")
    params: dict[str, Any] = {}
    accepted: dict[str, tuple[type, ...]] = {}
    for name, p in signature.parameters.items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            params[name] = p.default
            if name in hints:
                accepted[name] = _accepted_types(hints[name])
            elif p.default is inspect.Parameter.empty or p.default is None:
                accepted[name] = (object,)
            else:
                accepted[name] = _accepted_types(type(p.default))
    return params, accepted


def unregister_module(key: str) -> None:
    """Forget ``key`` (a plug-in that failed its checks); nothing when it is not registered."""
    _REGISTRY.pop(key, None)


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


def effective_params(key: str, channels: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ``key`` actually uses at ``channels``, canonical: its class's ``effective_params``, if any.

    Two parameter sets with equal effective parameters build the same module (same shapes; same outputs from the
    same initial weights). A class without ``effective_params`` (most plug-ins) gets ``params`` back as a copy.
    Raises an AttnsearchError when the class's method fails or returns something other than a dict of parameters.

    Example:
        >>> effective_params("se", 8, {"reduction": 64})
        {'reduction': 8}
        >>> effective_params("triplet", 8, {"kernel_size": 7})
        {'kernel_size': 7}
    """
    info = module_info(key)
    method = getattr(info.cls, "effective_params", None)
    if method is None:
        return dict(params)
    try:
        found = method(channels, **params)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise AttnsearchError(f"{key}: effective_params at {channels} channels failed: {err}") from None
    if not isinstance(found, dict) or any(name not in info.params for name in found):
        raise AttnsearchError(f"{key}: effective_params must return a dict of its parameters, got {found!r}")
    return found


def effective_reduction(channels: int, reduction: Any, floor: int = 1) -> Any:
    """The canonical reduction r for a hidden width ``max(floor, channels // r)``: among the reductions giving the
    same width, the smallest power of two, else (none is one) the largest. So a power of two stays as written
    unless the floor decides the width, and every reduction at or above ``channels`` becomes the same value. A value
    that is not a valid reduction (not an int >= 1) comes back as it is, for the constructor to refuse.

    Example:
        >>> [effective_reduction(c, r) for c, r in ((8, 64), (8, 3), (64, 11), (108, 18))]
        [8, 4, 12, 16]
    """
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        return reduction
    width = channels // reduction
    if width <= floor:  # the floor decides: every r from the first giving `floor` or less upwards
        low, high = channels // (floor + 1) + 1, None
    else:  # exactly `width`: r from channels // (width + 1) + 1 to channels // width
        low, high = channels // (width + 1) + 1, channels // width
    power = 1 << (low - 1).bit_length()  # the smallest power of two >= low
    return power if high is None or power <= high else high


def reduction_rule(floor: int = 1) -> Any:
    """The ``effective_params`` classmethod of a module whose only parameter that can collapse is ``reduction``,
    its width ``max(floor, C // reduction)``: ``reduction`` becomes :func:`effective_reduction`'s canonical value,
    every other parameter stays as given. A module class takes it as ``effective_params = reduction_rule()``.

    Example:
        >>> from attnsearch.attention.coord import CoordAttention
        >>> from attnsearch.attention.se import SqueezeExcite
        >>> SqueezeExcite.effective_params(8, reduction=64), CoordAttention.effective_params(64, reduction=32)
        ({'reduction': 8}, {'reduction': 8})
    """

    def effective_params(cls: type, channels: int, **params: Any) -> dict[str, Any]:
        found = dict(params)
        if "reduction" in found:
            found["reduction"] = effective_reduction(channels, found["reduction"], floor=floor)
        return found

    return classmethod(effective_params)


@register_module("none", paper="-")
class NoAttention(nn.Identity):
    """Placing nothing: the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
