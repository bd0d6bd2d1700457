"""A backbone with attention modules placed in its slots: the model every trial trains."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import nn

from .attention import check_params, create_module
from .backbones import Slot, backbone_info, build_backbone, describe_names, insert_modules, slot_sites, trace_slots
from .errors import AttnsearchError
from .gating import attach_gates, split_gates
from .plugin_checks import check_module_at
from .plugins import plugin_of

__all__ = ["Placement", "build_model", "list_slots", "normalize_placements"]

# What a slot may hold: a registry key, or {"type": key, **params}; None and "none" place nothing.
Placement = Union[str, Mapping[str, Any], None]  # noqa: UP007  (a runtime alias: Python 3.10 has no `|` here)


def list_slots(backbone: str, *, image_size: int = 224, width: float = 1.0, stem: str = "imagenet") -> list[Slot]:
    """Slots of ``backbone`` with the channels and spatial size of the map each one sees at ``image_size``
    (``stem``: ResNets only, see :func:`attnsearch.backbones.build_backbone`).

    Example:
        >>> [(s.name, s.channels, s.height) for s in list_slots("vgg16_bn", image_size=32)][:2]
        [('block1', 64, 32), ('block2', 128, 16)]
    """
    _check_image_size(image_size)
    return list(_traced_slots(backbone, image_size, width, stem))


@functools.lru_cache(maxsize=64)
def _traced_slots(backbone: str, image_size: int, width: float, stem: str = "imagenet") -> tuple[Slot, ...]:
    # a meta-device pass still costs tens of milliseconds (each op's shape rules run in Python): every trial of a
    # search asks for the same few backbones, so each is traced once per process
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = build_backbone(backbone, width=width, head="compact", num_classes=1, stem=stem)
    if backbone_info(backbone).family == "plugin":  # its own forward: any failure is the plug-in's, said as such
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, image_size, image_size, device="meta"))
        except Exception as err:
            says = f"{type(err).__name__}: {' '.join(str(err).split())}"
            raise AttnsearchError(f"{backbone}: does not run at image size {image_size}: {says}") from None
    try:
        return tuple(trace_slots(model, slot_sites(model), image_size))
    except AttnsearchError as err:
        raise AttnsearchError(f"{backbone}: {err}") from None


def normalize_placements(
    backbone: str, placements: Mapping[str, Placement] | None, slots: list[Slot] | None = None
) -> dict[str, tuple[str, dict]]:
    """Validate ``placements`` against the backbone's slots and the registry: slot -> (key, params), 'none' dropped."""
    names = [slot.name for slot in slots or list_slots(backbone, image_size=224)]
    result: dict[str, tuple[str, dict]] = {}
    for slot, value in (placements or {}).items():
        if slot not in names:
            raise AttnsearchError(f"unknown slot {slot!r} for {backbone}; valid: {describe_names(names)}")
        if isinstance(value, Mapping):
            params = dict(value)
            if "type" not in params:
                raise AttnsearchError(f"slot {slot}: a mapping needs a 'type' key naming the module")
            key = params.pop("type")
        else:
            key, params = value, {}
        if key is None or key == "none":
            if params:
                raise AttnsearchError(f"slot {slot}: 'none' takes no parameters")
            continue
        check_params(key, params)
        result[slot] = (key, params)
    return result


def build_model(
    backbone: str,
    placements: Mapping[str, Placement] | None = None,
    *,
    num_classes: int = 1000,
    width: float = 1.0,
    head: str = "classic",
    image_size: int = 224,
    pretrained: bool = False,
    memory_efficient: bool = False,
    stem: str = "imagenet",
) -> nn.Module:
    """Build ``backbone`` with attention modules in the named slots.

    Pretrained weights load into the plain backbone first; inserted modules keep their own initialisation.

    Example:
        >>> model = build_model("vgg16_bn", {"block3": "cbam", "block5": {"type": "self_attention"}},
        ...                     num_classes=10, width=0.25, head="compact", image_size=32)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    shapes = {slot.name: slot for slot in list_slots(backbone, image_size=image_size, width=width, stem=stem)}
    chosen = normalize_placements(backbone, placements, list(shapes.values()))
    chosen, gated = split_gates(chosen)  # attention gates sit beside the backbone: attnsearch.gating
    if gated and backbone_info(backbone).family == "plugin":
        raise AttnsearchError(f"gate placements need a built-in backbone; {backbone} is a plug-in's")
    model = build_backbone(
        backbone,
        num_classes=num_classes,
        width=width,
        head=head,
        pretrained=pretrained,
        memory_efficient=memory_efficient,
        stem=stem,
    )
    sites = slot_sites(model)
    modules: dict[str, Any] = {}
    for site in sites:
        if site.name not in chosen:
            continue
        key, params = chosen[site.name]
        slot = shapes[site.name]
        channels = slot.channels
        if plugin_of("module", key) is not None:  # the contract at this slot's own map, before anything trains
            check_module_at(key, site.name, (channels, slot.height, slot.width), params)
        if site.per_layer:
            modules[site.name] = lambda key=key, channels=channels, params=params: create_module(
                key, channels, **params
            )
        else:
            modules[site.name] = create_module(key, channels, **params)
    insert_modules(model, sites, modules)
    return attach_gates(model, backbone, gated, shapes, num_classes=num_classes) if gated else model


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise AttnsearchError(f"image_size must be a positive integer, got {image_size!r}")
