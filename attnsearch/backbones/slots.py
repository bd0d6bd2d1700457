"""Named insertion points ("slots") of a backbone: discovery, shapes, and insertion of modules.

A backbone lists its slot sites by walking its own module tree (see ``VGG.slot_sites``, ``DenseNet.slot_sites``,
``ResNet.slot_sites``); nothing here knows slot names. Shapes come from one forward pass on the meta device, so
listing the slots of a full-size model allocates no weights.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AttnsearchError

__all__ = ["ApplyAfter", "Slot", "SlotSite", "describe_names", "insert_modules", "trace_slots"]


@dataclass(frozen=True)
class Slot:
    """One place a module can go, with the feature map it sees there.

    Example:
        >>> from attnsearch import list_slots
        >>> list_slots("vgg16_bn", image_size=32)[0]
        Slot(name='block1', channels=64, height=32, width=32, block_level=True)
    """

    name: str
    channels: int
    height: int
    width: int
    block_level: bool  # one of the slots that `all:` in a space file expands to


@dataclass(frozen=True)
class SlotSite:
    """Where a slot lives in the module tree."""

    name: str
    parent: str  # dotted path of the nn.Sequential that receives the module, or of the block whose layers do
    after: str  # child of `parent` the module follows ("" when per_layer)
    probe: str  # dotted path of the module whose output is the feature map the slot sees
    block_level: bool
    per_layer: bool = False  # one module inside every layer of `parent`, each layer's `attn` attribute


def trace_slots(model: nn.Module, sites: Iterable[SlotSite], image_size: int) -> list[Slot]:
    """Run one forward pass of ``model`` (on its device, meta included) and read each site's shape."""
    sites = list(sites)
    shapes: dict[str, torch.Size] = {}
    handles = []
    for site in sites:

        def record(_module: nn.Module, _inputs: object, output: torch.Tensor, name: str = site.name) -> None:
            shapes.setdefault(name, output.shape)

        handles.append(model.get_submodule(site.probe).register_forward_hook(record))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    except (RuntimeError, ValueError) as err:
        raise AttnsearchError(f"image_size {image_size} is too small for this backbone ({err})") from None
    finally:
        for handle in handles:
            handle.remove()
    return [Slot(s.name, shapes[s.name][1], shapes[s.name][2], shapes[s.name][3], s.block_level) for s in sites]


def insert_modules(model: nn.Module, sites: Iterable[SlotSite], modules: dict[str, nn.Module]) -> None:
    """Insert ``modules`` (slot name -> module) into ``model`` in place.

    A module at a Sequential site becomes a child named ``<slot>_attn`` right after the site's child,
    so every original child keeps its name (and a torchvision state_dict still loads).
    A per-layer slot gets one module per layer: ``modules[slot]`` is then a factory called once per layer. A
    per-layer slot and a Sequential slot may share a parent (ResNet's ``layer2_blocks`` and ``layer2``).
    A parent that is not a Sequential (a plug-in backbone's own module) keeps its ``forward``: the module is its
    child ``<slot>_attn`` all the same, applied by a forward hook on the site's child (:class:`ApplyAfter`).
    """
    chosen = [site for site in sites if site.name in modules]
    # per-layer sites first: a Sequential site of the same parent (ResNet's layer2 and layer2_blocks) then adds
    # its module after layers that already hold theirs, and no `attn` lands on an inserted module
    for site in chosen:
        if site.per_layer:
            make: Callable[[], nn.Module] = modules[site.name]  # type: ignore[assignment]
            for layer in model.get_submodule(site.parent).children():
                layer.attn = make()
    by_parent: dict[str, list[SlotSite]] = {}
    for site in chosen:
        if not site.per_layer:
            by_parent.setdefault(site.parent, []).append(site)
    for parent_path, parent_sites in by_parent.items():
        parent = model.get_submodule(parent_path)
        if not isinstance(parent, nn.Sequential):
            for site in parent_sites:
                parent.add_module(f"{site.name}_attn", modules[site.name])
                parent.get_submodule(site.after).register_forward_hook(ApplyAfter(modules[site.name]))
            continue
        after: dict[str, list[SlotSite]] = {}
        for site in parent_sites:
            after.setdefault(site.after, []).append(site)
        children: OrderedDict[str, nn.Module] = OrderedDict()
        for name, child in parent.named_children():
            children[name] = child
            # at a shared point (conv5_3 and block5 in VGG) the finer slot's module comes first
            for site in sorted(after.get(name, []), key=lambda s: s.block_level):
                children[f"{site.name}_attn"] = modules[site.name]
        if parent_path:
            _replace(model, parent_path, nn.Sequential(children))
        else:  # the model itself is the Sequential (a plug-in backbone's): its children are re-added in order
            parent._modules.clear()
            for name, child in children.items():
                parent.add_module(name, child)


class ApplyAfter:
    """A forward hook that passes a submodule's output through a placed module (picklable, unlike a closure)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, _submodule: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return self.module(output)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    owner_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(owner_path) if owner_path else model, attr, new)


def describe_names(names: Iterable[str]) -> str:
    """Short listing of slot names: runs that differ only in their numbers become ``first..last``."""
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for name in names:
        groups.setdefault(re.sub(r"\d+", "#", name), []).append(name)
    return ", ".join(
        g[0] if len(g) == 1 else f"{g[0]}..{g[-1]}" if len(g) > 2 else ", ".join(g) for g in groups.values()
    )
