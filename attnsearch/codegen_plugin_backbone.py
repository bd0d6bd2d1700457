"""A plug-in backbone in an exported file (see :mod:`attnsearch.codegen` and :mod:`attnsearch.codegen_plugin`).

The exported ``build_model`` calls the plug-in's own factory, from its embedded or copied source, with the trial's
``num_classes`` (and ``width`` where the factory takes it), then places the trial's attention modules as
:mod:`attnsearch.backbones.plugin` does: after the submodule each slot names, as a child ``<slot>_attn`` of its
parent (in the sequence of an ``nn.Sequential`` parent, else through a forward hook on the submodule), so the
state_dict keys are attnsearch's, one to one. Slot paths, names and parameters are checked values; an attention
gate on a plug-in backbone has no template and is refused.
"""

from __future__ import annotations

import re

from torch import nn

from .candidate import Candidate
from .errors import AttnsearchError

__all__ = ["plugin_backbone_body"]

_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def plugin_backbone_body(model: nn.Module, candidate: Candidate, slots: dict[str, int]) -> str:
    """The ``_place`` helper and the ``_plugin_backbone`` function of the exported file.

    Example:
        >>> from attnsearch.candidate import BackboneSpec
        >>> plugin_backbone_body(nn.Identity(), Candidate(BackboneSpec("vgg11_bn")), {})
        Traceback (most recent call last):
        attnsearch.errors.AttnsearchError: export: vgg11_bn is not a plug-in backbone
    """
    from .backbones.plugin import PLUGIN_BACKBONES
    from .codegen import _attention_call, _call, _identifier, _literal, _same_module, _template
    from .codegen_plugin import plugin_factory

    b = candidate.backbone
    info = PLUGIN_BACKBONES.get(b.name)
    if info is None:
        raise AttnsearchError(f"export: {b.name} is not a plug-in backbone")
    if any(p.module == "gate" for p in candidate.placements):
        raise AttnsearchError(f"export: an attention gate on the plug-in backbone {b.name} has no template")
    args = ["num_classes=num_classes"] + ([f"width={_literal(b.width, 'width')}"] if info.takes_width else [])
    placed = {p.slot: p for p in candidate.placements}
    by_parent: dict[str, list[str]] = {}
    for slot, path in info.slots.items():  # declaration order: the order attnsearch inserts them in
        if slot not in placed:
            continue
        if not _PATH.fullmatch(path):
            raise AttnsearchError(f"export: slot {slot} of {b.name}: {path!r:.60} is not a submodule path")
        parent, _, after = path.rpartition(".")
        name = f"{_identifier(slot, 'slot')}_attn"
        _same_module(model.get_submodule(f"{parent}.{name}" if parent else name), placed[slot])
        call = "".join(_call(*_attention_call(placed[slot], slots[slot])))
        by_parent.setdefault(parent, []).append(f'("{after}", "{name}", {call})')
    lines = []
    for parent, entries in by_parent.items():
        inner = "".join(f"            {entry},\n" for entry in entries)
        lines.append(f'    _place(\n        model,\n        "{parent}",\n        [\n{inner}        ],\n    )')
    return _template("backbone_plugin").substitute(
        backbone=b.name if _KEY.fullmatch(b.name) else "the plug-in backbone",
        factory="".join(_call(plugin_factory(b.name), args, indent=12)),
        placements="\n".join(lines),
    )
