"""The backbone registry: names users write in a space file, mapped to builders and pretrained weights."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tv_models

from ..candidate import HEADS
from ..errors import AttnsearchError
from .cnn3 import build_cnn3
from .densenet import DENSENET_CONFIGS, build_densenet
from .plugin import PLUGIN_ATTRIBUTE, PLUGIN_BACKBONES, PluginBackbone, build_plugin_backbone, plugin_slot_sites
from .plugin import slot_table, takes_width
from .resnet import RESNET_CONFIGS, STEMS, build_resnet
from .slots import SlotSite
from .vgg import VGG_CONFIGS, build_vgg

__all__ = ["HEADS", "BackboneInfo", "backbone_info", "build_backbone", "list_backbones", "register_backbone"]


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    family: str  # "vgg" | "densenet" | "resnet" | "cnn" | "plugin"
    weights: str | None  # torchvision weights enum, e.g. "VGG16_BN_Weights"; None: no pretrained weights exist


def _vgg_weights(name: str) -> str:
    return f"{name.upper()}_Weights"


def _densenet_weights(name: str) -> str | None:
    return None if name == "densenet_bc100" else f"DenseNet{name.removeprefix('densenet')}_Weights"


_BACKBONES: dict[str, BackboneInfo] = {}
for _name in VGG_CONFIGS:
    for _variant in (_name, f"{_name}_bn"):
        _BACKBONES[_variant] = BackboneInfo(_variant, "vgg", _vgg_weights(_variant))
for _name in DENSENET_CONFIGS:
    _BACKBONES[_name] = BackboneInfo(_name, "densenet", _densenet_weights(_name))
for _name in RESNET_CONFIGS:
    _BACKBONES[_name] = BackboneInfo(_name, "resnet", f"ResNet{_name.removeprefix('resnet')}_Weights")
_BACKBONES["cnn3"] = BackboneInfo("cnn3", "cnn", None)


def register_backbone(
    key: str, *, slots: dict[str, str] | list[str], paper: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a backbone factory ``f(num_classes, width)`` (``width`` optional) under ``key``.

    ``slots`` maps each slot's name to the dotted path of the submodule it follows (``{"stage1": "features.0"}``),
    or lists the paths (each slot then named after its path, dots as underscores). Each slot's channels and map
    size are found by tracing, as for the built-ins; where a placed module goes: :mod:`attnsearch.backbones.plugin`.
    Raises an AttnsearchError for a key registered twice or a malformed ``slots``.

    Example:
        >>> @register_backbone("doc_two", slots={"s1": "0", "s2": "2"})
        ... def two(num_classes, width=1.0):
        ...     return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
        ...                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        >>> [s.name for s in slot_sites(build_backbone("doc_two", num_classes=3))]
        ['s1', 's2']
        >>> unregister_backbone("doc_two")
    """

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if key in _BACKBONES:
            raise AttnsearchError(f"backbone {key!r} is registered twice")
        table = slot_table(key, slots)
        PLUGIN_BACKBONES[key] = PluginBackbone(key, factory, table, paper, takes_width(key, factory))
        _BACKBONES[key] = BackboneInfo(key, "plugin", None)
        return factory

    return decorate


def unregister_backbone(key: str) -> None:
    """Forget a plug-in backbone (one that failed its checks); nothing for a built-in or unknown key."""
    if key in PLUGIN_BACKBONES:
        del PLUGIN_BACKBONES[key], _BACKBONES[key]


def list_backbones() -> list[str]:
    """Backbone names: VGGs, DenseNets, ResNets, cnn3, then plug-ins'."""
    return list(_BACKBONES)


def backbone_info(name: str) -> BackboneInfo:
    try:
        return _BACKBONES[name]
    except (KeyError, TypeError):
        raise AttnsearchError(f"unknown backbone {name!r}; valid: {', '.join(_BACKBONES)}") from None


def build_backbone(
    name: str,
    *,
    num_classes: int = 1000,
    width: float = 1.0,
    head: str = "classic",
    pretrained: bool = False,
    memory_efficient: bool = False,
    stem: str = "imagenet",
) -> nn.Module:
    """A plain backbone, nothing placed. ``head`` matters for VGG only: the others' own heads are already compact
    (global pool and one linear layer). ``stem`` matters for ResNets only: ``cifar`` is a 3x3 stride-1 first conv
    and no max pool, for 32x32 images; any other backbone takes ``imagenet`` (its own stem) only."""
    info = backbone_info(name)
    if stem not in STEMS:
        raise AttnsearchError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    if stem != "imagenet" and info.family != "resnet":
        raise AttnsearchError(f"stem {stem!r} applies to ResNet backbones only, not {name}")
    if head not in HEADS:
        raise AttnsearchError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise AttnsearchError(f"width must be a number in (0, 4], got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise AttnsearchError(f"num_classes must be a positive integer, got {num_classes!r}")
    # find the weights file before building anything: a missing file is a quick, clear error
    if pretrained and stem != "imagenet":
        raise AttnsearchError(f"pretrained weights for {name} exist for the imagenet stem only, got stem {stem!r}")
    weights_file = _pretrained_file(info, width) if pretrained else None
    if memory_efficient and info.family != "densenet":
        raise AttnsearchError("memory_efficient applies to DenseNet backbones only")
    model: nn.Module
    if info.family == "plugin":
        model = build_plugin_backbone(name, num_classes=num_classes, width=width)
    elif info.family == "vgg":
        model = build_vgg(name, num_classes=num_classes, width=width, head=head)
    elif info.family == "densenet":
        model = build_densenet(name, num_classes=num_classes, width=width, memory_efficient=memory_efficient)
    elif info.family == "resnet":
        model = build_resnet(name, num_classes=num_classes, width=width, stem=stem)
    else:
        model = build_cnn3(num_classes=num_classes, width=width)
    if weights_file is not None:
        _load_pretrained(model, info, weights_file)
    return model


def slot_sites(model: nn.Module) -> list[SlotSite]:
    key = getattr(model, PLUGIN_ATTRIBUTE, None)
    return plugin_slot_sites(key) if key in PLUGIN_BACKBONES else model.slot_sites()  # type: ignore[operator]


# Old DenseNet checkpoints name layers 'norm.1' where the modules are now 'norm1'.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


def pretrained_path(info: BackboneInfo) -> str:
    """Where torchvision keeps the weights file of ``info`` (TORCH_HOME/hub/checkpoints)."""
    if info.weights is None:
        raise AttnsearchError(f"no pretrained weights exist for {info.name}")
    url = getattr(tv_models, info.weights).DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _pretrained_file(info: BackboneInfo, width: float) -> str:
    if width != 1.0:
        raise AttnsearchError(f"pretrained weights for {info.name} exist for width 1.0 only, got width {width}")
    path = pretrained_path(info)
    if not os.path.exists(path):
        raise AttnsearchError(
            f"pretrained weights for {info.name} are not on this machine: place {os.path.basename(path)} "
            f"in {os.path.dirname(path)} (set TORCH_HOME to use another folder)"
        )
    return path


def _load_pretrained(model: nn.Module, info: BackboneInfo, path: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise AttnsearchError(f"cannot read pretrained weights {path}: {err}") from None
    state = {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    own = model.state_dict()
    # the head is loaded only when it has the pretrained shape (classic VGG head, 1000 classes)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # every tensor before the head must come from the file; old checkpoints carry no BatchNorm step counters
    head = f"{type(model).HEAD}."
    missing = [k for k in own if not k.startswith(head) and k not in usable and "num_batches_tracked" not in k]
    if missing:
        raise AttnsearchError(
            f"{path} does not fit {info.name}: {len(missing)} tensors before the head missing, e.g. {missing[0]}"
        )
    model.load_state_dict(usable, strict=False)
