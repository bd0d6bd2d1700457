"""What a plug-in registered, and the contract checks it must pass when it is loaded.

An attention module keeps its input's shape (odd and non-square maps, one channel or many), gives gradients to its
input and to every parameter, and runs in float32 and in bfloat16 (under CPU autocast, as mixed-precision training
feeds it). A backbone's factory builds an ``nn.Module`` holding every declared slot's submodule; that it runs at
the space's image size is checked when a space names it (:func:`attnsearch.model.list_slots`). A dataset's arrays
are checked when it is loaded (:mod:`attnsearch.data.plugin_source`).

Example:
    >>> check_module("se")  # the built-ins keep the contract too
    >>> sorted(registered())
    ['backbone', 'dataset', 'module']
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch

from .errors import AttnsearchError

if TYPE_CHECKING:
    from .plugins import Plugin

__all__ = [
    "CONTRACT_SHAPES",
    "check_module",
    "check_module_at",
    "check_plugin",
    "gained",
    "owned_by",
    "registered",
    "unregister",
]

# (channels, height, width) a module is run on at load: one channel, odd and non-square maps both ways
CONTRACT_SHAPES = ((1, 7, 5), (16, 5, 7), (8, 9, 9))


def registered() -> dict[str, set[str]]:
    """Every key now registered, by kind (module, backbone, dataset)."""
    from .attention import list_modules
    from .backbones import list_backbones
    from .dataset_registry import plugin_datasets

    return {"module": set(list_modules()), "backbone": set(list_backbones()), "dataset": set(plugin_datasets())}


def gained(before: dict[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """Keys registered since ``before`` (a :func:`registered`), by kind, in registration order."""
    from .attention import list_modules
    from .backbones import list_backbones
    from .dataset_registry import plugin_datasets

    now = {"module": list_modules(), "backbone": list_backbones(), "dataset": plugin_datasets()}
    return {kind: tuple(k for k in keys if k not in before[kind]) for kind, keys in now.items()}


def owned_by(module_name: str) -> dict[str, tuple[str, ...]]:
    """Keys whose class, factory or loader was defined in the module ``module_name`` (or a submodule of it)."""
    from .attention import list_modules, module_info
    from .backbones.plugin import PLUGIN_BACKBONES
    from .dataset_registry import _DATASETS

    def mine(obj: object) -> bool:
        where = getattr(obj, "__module__", "") or ""
        return where == module_name or where.startswith(module_name + ".")

    return {
        "module": tuple(k for k in list_modules() if mine(module_info(k).cls)),
        "backbone": tuple(k for k, b in PLUGIN_BACKBONES.items() if mine(b.factory)),
        "dataset": tuple(k for k, d in _DATASETS.items() if mine(d.loader)),
    }


def unregister(keys: dict[str, tuple[str, ...]]) -> None:
    """Forget ``keys`` (what a plug-in that failed registered), by kind."""
    from .attention.registry import unregister_module
    from .backbones.registry import unregister_backbone
    from .dataset_registry import unregister_dataset

    for kind, forget in (("module", unregister_module), ("backbone", unregister_backbone)):
        for key in keys.get(kind, ()):
            forget(key)
    for key in keys.get("dataset", ()):
        unregister_dataset(key)


def check_plugin(plugin: Plugin) -> None:
    """Run the load-time contract checks on everything ``plugin`` registered; an AttnsearchError (one line) for the
    first broken promise."""
    for key in plugin.keys.get("module", ()):
        check_module(key)
    for key in plugin.keys.get("backbone", ()):
        check_backbone(key)


def check_module(key: str) -> None:
    """The attention module ``key``, built with its defaults, on the maps of :data:`CONTRACT_SHAPES`: same shape
    out, finite, gradients to the input and every parameter, and a bfloat16 pass under CPU autocast."""
    from .attention import module_info

    cls = module_info(key).cls  # built directly: its own error, not create_module's rewording
    for channels, height, width in CONTRACT_SHAPES:
        shape = (2, channels, height, width)
        what = f"module {key!r} on a {tuple(shape)} input"
        generator = torch.Generator().manual_seed(0)
        try:
            module = cls(channels).train()
        except Exception as err:
            raise AttnsearchError(f"module {key!r}: cannot be built with {channels} channels: {_says(err)}") from None
        x = torch.randn(shape, generator=generator, requires_grad=True)
        try:
            y = module(x)
        except Exception as err:
            raise AttnsearchError(f"{what}: fails in float32: {_says(err)}") from None
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise AttnsearchError(f"{what}: must keep its input's shape, returned {got}")
        if not torch.isfinite(y).all():
            raise AttnsearchError(f"{what}: returned values that are not finite")
        _check_gradients(what, module, x, y, generator)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = cls(channels).train()(x.detach().to(torch.bfloat16))
        except Exception as err:
            raise AttnsearchError(f"{what}: fails in bfloat16 (CPU autocast): {_says(err)}") from None
        if not isinstance(low, torch.Tensor) or low.shape != x.shape:
            raise AttnsearchError(f"{what}: changes its input's shape in bfloat16")


def _check_gradients(what: str, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, generator: object) -> None:
    if not y.requires_grad:
        raise AttnsearchError(f"{what}: its output has no gradient (computed without autograd?)")
    weights = torch.randn(y.shape, generator=generator)  # type: ignore[call-overload]
    try:
        (y * weights).sum().backward()
    except Exception as err:
        raise AttnsearchError(f"{what}: backward fails: {_says(err)}") from None
    if x.grad is None:
        raise AttnsearchError(f"{what}: gives no gradient to its input (a detach, or a path outside autograd)")
    for name, parameter in module.named_parameters():
        if parameter.requires_grad and parameter.grad is None:
            raise AttnsearchError(f"{what}: parameter {name!r} gets no gradient")


def check_module_at(key: str, slot: str, shape: tuple[int, int, int], params: dict[str, Any]) -> None:
    """The plug-in module ``key`` with ``params`` keeps the shape ``(C, H, W)`` of the map at ``slot``: one
    forward pass on the meta device (no weights, no arithmetic), once per process for each module, shape and
    parameters. A module the meta device cannot run is passed over: its real pass will say what fails."""
    got = _meta_shape(key, *shape, tuple(sorted(params.items())))
    if got is not None and got != (2, *shape):
        from .plugins import plugin_of

        plugin = plugin_of("module", key)
        who = f"module {key!r}" + (f" (plug-in {plugin.name})" if plugin else "")
        raise AttnsearchError(f"slot {slot}: {who} must keep its input's shape {(2, *shape)}, returned {got}")


@functools.lru_cache(maxsize=512)
def _meta_shape(key: str, channels: int, height: int, width: int, params: tuple) -> tuple[int, ...] | None:
    from .attention import module_info

    try:
        with torch.device("meta"):
            y = module_info(key).cls(channels, **dict(params))(torch.empty(2, channels, height, width))
    except Exception:
        return None
    return tuple(y.shape) if isinstance(y, torch.Tensor) else (-1,)


def check_backbone(key: str) -> None:
    """Build the backbone ``key`` on the meta device (no weights allocated): an ``nn.Module`` with every slot."""
    from .backbones import build_backbone

    with torch.device("meta"):
        build_backbone(key, num_classes=2, head="compact")


def _says(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
