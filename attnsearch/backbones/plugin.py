"""Plug-in backbones: a factory of the user's own, with its slots declared as submodule paths.

A slot declared at ``path`` sees the output of the submodule at ``path``; a module placed there is a child named
``<slot>_attn`` of the submodule's parent, so every original parameter keeps its name and the placed module's are
``<parent>.<slot>_attn.*`` (``<slot>_attn.*`` for a top-level submodule). When the parent is an ``nn.Sequential``
the child goes right after the submodule (as in the built-ins); otherwise the parent's own ``forward`` runs
unchanged and a forward hook on the submodule passes its output through the placed module
(:func:`attnsearch.backbones.slots.insert_modules`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import AttnsearchError
from .slots import SlotSite

__all__ = ["PLUGIN_ATTRIBUTE", "PluginBackbone", "build_plugin_backbone", "plugin_slot_sites", "slot_table"]

PLUGIN_ATTRIBUTE = "attnsearch_backbone"  # set on a plug-in backbone's model: its registry key


@dataclass(frozen=True)
class PluginBackbone:
    key: str
    factory: Callable[..., nn.Module]  # f(num_classes, width) or f(num_classes)
    slots: dict[str, str]  # slot name -> dotted submodule path
    paper: str
    takes_width: bool


PLUGIN_BACKBONES: dict[str, PluginBackbone] = {}


def slot_table(key: str, slots: dict[str, str] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """Slot name -> submodule path; a list of paths names each slot after its path, dots as underscores."""
    table = {path.replace(".", "_"): path for path in slots} if isinstance(slots, (list, tuple)) else slots
    if not isinstance(table, dict) or not table:
        raise AttnsearchError(f"backbone {key!r}: slots must be a non-empty mapping of slot name -> submodule path")
    for name, path in table.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name) or name == "all":
            raise AttnsearchError(
                f"backbone {key!r}: slot name {name!r} must be an identifier other than 'all' "
                "(name a slot: slots={'name': 'path'})"
            )
        if not isinstance(path, str) or not re.fullmatch(r"\w+(\.\w+)*", path):
            raise AttnsearchError(f"backbone {key!r}: slot {name}: {path!r} is not a dotted submodule path")
    return dict(table)


def takes_width(key: str, factory: Callable[..., nn.Module]) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError) as err:
        raise AttnsearchError(f"backbone {key!r}: cannot read the factory's signature: {err}") from None
    if "num_classes" not in params:
        raise AttnsearchError(f"backbone {key!r}: the factory must take num_classes (and optionally width)")
    return "width" in params


def build_plugin_backbone(key: str, *, num_classes: int, width: float) -> nn.Module:
    """The factory's model, checked: an ``nn.Module`` holding every declared slot's submodule."""
    info = PLUGIN_BACKBONES[key]
    if not info.takes_width and width != 1.0:
        raise AttnsearchError(f"backbone {key}: its factory takes no width; got width {width}")
    kwargs = {"num_classes": num_classes, **({"width": width} if info.takes_width else {})}
    try:
        model = info.factory(**kwargs)
    except AttnsearchError:
        raise
    except Exception as err:  # the plug-in's own code: its message on one line
        raise AttnsearchError(f"backbone {key}: the factory failed: {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise AttnsearchError(f"backbone {key}: the factory returned {type(model).__name__}, not an nn.Module")
    for slot, path in info.slots.items():
        try:
            model.get_submodule(path)
        except AttributeError:
            raise AttnsearchError(f"backbone {key}: slot {slot}: the model has no submodule {path!r}") from None
    setattr(model, PLUGIN_ATTRIBUTE, key)  # a plain string attribute: pickles, and slot_sites finds the slots
    return model


def plugin_slot_sites(key: str) -> list[SlotSite]:
    """One block-level site per declared slot, in declaration order."""
    sites = []
    for slot, path in PLUGIN_BACKBONES[key].slots.items():
        parent, _, after = path.rpartition(".")
        sites.append(SlotSite(slot, parent, after, path, True))
    return sites
