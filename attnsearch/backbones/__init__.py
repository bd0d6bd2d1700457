"""Backbones with named insertion slots: VGG, DenseNet and ResNet (torchvision's definitions) and the small cnn3."""

from __future__ import annotations

from .registry import (
    HEADS,
    BackboneInfo,
    backbone_info,
    build_backbone,
    list_backbones,
    pretrained_path,
    register_backbone,
    slot_sites,
)
from .slots import Slot, SlotSite, describe_names, insert_modules, trace_slots

__all__ = [
    "HEADS",
    "BackboneInfo",
    "Slot",
    "SlotSite",
    "backbone_info",
    "build_backbone",
    "describe_names",
    "insert_modules",
    "list_backbones",
    "pretrained_path",
    "register_backbone",
    "slot_sites",
    "trace_slots",
]
