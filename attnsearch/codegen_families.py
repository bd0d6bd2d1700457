"""The backbone part of an exported file for the ResNets and cnn3 (see :mod:`attnsearch.codegen`).

Each writer walks attnsearch's own model of the candidate (built on the meta device) and fills the family's
template with values read off it and checked here: layer sizes as integers, the blocks' strides, and the attention
modules of the candidate's placements, each checked to be the module that really sits at its slot.
"""

from __future__ import annotations

from torch import nn

from .backbones.cnn3 import CNN3
from .backbones.resnet import BasicBlock, Bottleneck, ResNet
from .candidate import Candidate, PlacementSpec
from .codegen import _attention_call, _attention_entry, _call, _entry, _layer, _literal, _same_module, _template
from .errors import AttnsearchError
from .gating import GatedModel

__all__ = ["cnn3_body", "resnet_body"]

_BLOCK_TEMPLATES = {BasicBlock: "backbone_resnet_basic", Bottleneck: "backbone_resnet_bottleneck"}
_STAGE = """\
        self.{name} = nn.Sequential(
            OrderedDict(
                [
{entries}
                ]
            )
        )"""


def resnet_body(model: nn.Module, candidate: Candidate, slots: dict[str, int]) -> str:
    """The ``ResNet`` class, its block class and the shortcut helper (of the backbone, when gates wrap it)."""
    model = _unwrapped(model)
    if not isinstance(model, ResNet):
        raise AttnsearchError("export: the model is not a ResNet")
    placed = {f"{p.slot}_attn": p for p in candidate.placements}
    in_blocks = {p.slot.removesuffix("_blocks"): p for p in candidate.placements if p.slot.endswith("_blocks")}
    block_kind = type(model.layer1[0])
    stages: list[str] = []
    for k in range(1, 5):
        name = f"layer{k}"
        lines: list[str] = []
        for child_name, child in getattr(model, name).named_children():
            if attention := _attention_entry(child_name, child, placed, slots):
                lines += attention
                continue
            if type(child) is not block_kind:
                raise AttnsearchError(f"export: {name}.{child_name} is not a {block_kind.__name__}")
            call, comment = _block_call(child, in_blocks.get(name), slots, first=child_name == "0")
            lines += _entry(child_name, *call, comment=comment)
        stages.append(_STAGE.format(name=name, entries="\n".join(lines)))
    maxpool = "nn.Identity()" if isinstance(model.maxpool, nn.Identity) else "".join(_call(*_layer(model.maxpool)))
    return _template("backbone_resnet").substitute(
        block=_template(_BLOCK_TEMPLATES[block_kind]).substitute().rstrip("\n"),
        backbone=candidate.backbone.name,
        conv1="".join(_call(*_layer(model.conv1))),
        bn1="".join(_call(*_layer(model.bn1))),
        maxpool=maxpool,
        layers="\n".join(stages),
        channels=_literal(model.fc.in_features, "channels"),
    )


def _block_call(
    block: nn.Module, placement: PlacementSpec | None, slots: dict[str, int], *, first: bool
) -> tuple[tuple[str, list[str]], str | None]:
    """``BasicBlock(inplanes, planes[, stride=s][, attn=Module(...)])`` and its comment line (the first block's)."""
    args = [_literal(block.conv1.in_channels, "inplanes"), _literal(block.conv1.out_channels, "planes")]
    strided = block.conv1 if isinstance(block, BasicBlock) else block.conv2
    if strided.stride != (1, 1):
        args.append(f"stride={_literal(strided.stride[0], 'stride')}")
    comment = None
    if placement is None:
        if not isinstance(block.attn, nn.Identity):
            raise AttnsearchError("export: a residual block holds a module no placement names")
    else:
        _same_module(block.attn, placement)
        cls, call_args = _attention_call(placement, slots[placement.slot])
        args.append(f"attn={''.join(_call(cls, call_args))}")
        comment = f"{placement.slot}: one {cls} in every block" if first else None
    return (type(block).__name__, args), comment


def cnn3_body(model: nn.Module, candidate: Candidate, slots: dict[str, int]) -> str:
    """The ``CNN3`` class and its stage maker (of the backbone, when gates wrap it)."""
    model = _unwrapped(model)
    if not isinstance(model, CNN3):
        raise AttnsearchError("export: the model is not a cnn3")
    placed = {f"{p.slot}_attn": p for p in candidate.placements}
    lines: list[str] = []
    for name, child in model.features.named_children():
        if attention := _attention_entry(name, child, placed, slots):
            lines += attention
            continue
        conv = child.get_submodule("conv")
        if type(conv) is not nn.Conv2d:
            raise AttnsearchError(f"export: features.{name} is not a cnn3 stage")
        args = [_literal(conv.in_channels, name), _literal(conv.out_channels, name)]
        lines += _entry(name, "_stage", args)
    return _template("backbone_cnn3").substitute(
        backbone=candidate.backbone.name,
        features="\n".join(lines),
        channels=_literal(model.classifier.in_features, "channels"),
    )


def _unwrapped(model: nn.Module) -> nn.Module:
    # a gated model's children are its backbone's: the backbone's class is written as usual, the gates elsewhere
    return model.backbone if isinstance(model, GatedModel) else model
