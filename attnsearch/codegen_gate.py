"""The exported code of attention gates: the gate's class and a subclass of the backbone with the gated forward.

:func:`attnsearch.codegen.generate_code` writes the backbone as always (gates never enter its layers) and asks
:func:`gate_code` for the rest: ``templates/attention_gate.py.tmpl`` (the gate, written from
:class:`attnsearch.attention.gate.AttentionGate`'s math with its tensor names) and ``templates/gated_model.py.tmpl``
(``GatedVGG``, ``GatedDenseNet``, ``GatedResNet``, ``GatedCNN3``: the backbone's class with ``gates`` and
``gate_heads`` and a forward that keeps the maps of the tapped layers). The submodule names are
:class:`attnsearch.gating.GatedModel`'s, so the trained state_dict loads one to one. Only validated values fill the
templates: slot and layer names checked against patterns, numbers read off the built model and formatted by
:mod:`attnsearch.codegen`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .attention import module_info
from .attention.gate import AGGREGATIONS, AttentionGate
from .candidate import Candidate, PlacementSpec
from .codegen import _child_name, _identifier, _literal, _template
from .errors import AttnsearchError
from .gating import GATE, GatedModel

__all__ = ["GateCode", "gate_code"]

# The gated forward's walk over the backbone's layers, keeping the outputs of the tapped ones, and what the
# backbone's forward does after them before its classifier, per family (our own text, no value from outside).
_FEATURES_WALK = """\
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in self.taps:
                maps[self.taps[name]] = x"""
_RESNET_WALK = """\
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = {"layer1": self.layer1, "layer2": self.layer2, "layer3": self.layer3, "layer4": self.layer4}
        for stage, blocks in stages.items():
            for name, block in blocks.named_children():
                x = block(x)
                if f"{stage}.{name}" in self.taps:
                    maps[self.taps[f"{stage}.{name}"]] = x"""
_WALK = {"vgg": _FEATURES_WALK, "densenet": _FEATURES_WALK, "cnn": _FEATURES_WALK, "resnet": _RESNET_WALK}
_POOLED = {
    "vgg": "torch.flatten(self.avgpool(x), 1)",
    "densenet": "torch.flatten(F.adaptive_avg_pool2d(F.relu(x), (1, 1)), 1)",
    "cnn": "torch.flatten(self.avgpool(x), 1)",
    "resnet": "torch.flatten(self.avgpool(x), 1)",
}
# the modules whose children are tapped; a tap's key in the code is the child's name (features) or its path (ResNet)
_TAP_OWNERS = {
    "vgg": ("features",),
    "densenet": ("features",),
    "cnn": ("features",),
    "resnet": ("layer1", "layer2", "layer3", "layer4"),
}
_INDENT = " " * 16  # entries of the ModuleDicts in __init__
_ITEM = " " * 12  # entries of the plain dicts in __init__


@dataclass(frozen=True)
class GateCode:
    sections: list[str]  # the gate's class, then the gated model's class
    model_class: str  # what build_model() returns
    needs: frozenset[str]  # names of codegen's imports the sections use


def _check_gate_placement(placement: PlacementSpec) -> None:
    """A gate placement's slot and parameters, as ``codegen._check_placement`` checks the others'."""
    _identifier(placement.slot, "slot")
    allowed = module_info(GATE).params
    for name, value in placement.params:
        if name not in allowed:
            raise AttnsearchError(f"export: gate has no parameter {name!r:.40}")
        if name == "gating_slot":
            if value is not None:
                _identifier(value, "gate.gating_slot")
        elif name == "aggregation":
            if value not in AGGREGATIONS:
                raise AttnsearchError(f"export: gate.aggregation must be one of {', '.join(AGGREGATIONS)}")
        else:
            _literal(value, f"gate.{name}")


def gate_code(model: nn.Module, candidate: Candidate, family: str) -> GateCode:
    """The sections for ``model``, the :class:`GatedModel` built from ``candidate`` (on the meta device)."""
    from .codegen import _MODEL_CLASS

    for placement in candidate.placements:
        if placement.module == GATE:
            _check_gate_placement(placement)
    if not isinstance(model, GatedModel) or family not in _WALK:
        raise AttnsearchError(f"export: attention gates on a {family} backbone have no template")
    taps = {}
    for slot, path in model.probes.items():
        owner, _, child = path.partition(".")
        if owner not in _TAP_OWNERS[family] or "." in child:
            raise AttnsearchError(f"export: the map of slot {slot} is not the output of a layer the template walks")
        key = _child_name(child) if family != "resnet" else f"{owner}.{_child_name(child)}"
        taps[key] = _identifier(slot, "slot")
    name = _identifier(model.backbone.HEAD, "head")
    head = getattr(model, name)
    sized_by_classes = model.aggregation == "mean" or isinstance(head, nn.Linear)  # else a classic head's first Linear
    gates, heads = [], []
    for slot, gate in model.gates.items():
        if type(gate) is not AttentionGate:
            raise AttnsearchError(f"export: slot {slot} does not hold a gate")
        sizes = [_literal(v, "gate") for v in (gate.channels, gate.gating_channels, gate.stride, gate.inter_channels)]
        call = f"AttentionGate({sizes[0]}, {sizes[1]}, stride={sizes[2]}, inter_channels={sizes[3]})"
        gates.append(f'{_INDENT}"{slot}": {call},')
        linear = model.gate_heads[slot]
        bias = "" if linear.bias is not None else ", bias=False"
        out = "num_classes" if sized_by_classes else _literal(linear.out_features, "gate head")
        heads.append(f'{_INDENT}"{slot}": nn.Linear({_literal(linear.in_features, "gate head")}, {out}{bias}),')
    if model.aggregation == "mean":
        combine = f"torch.stack([self.{name}(pooled), *gated]).mean(dim=0)"
        doc = "The paper's separate heads: the classifier's logits and one per gate, averaged."
    elif isinstance(head, nn.Linear):
        combine = f"self.{name}(pooled) + sum(gated)"
        doc = "One linear classifier over [pooled; gated...]: the classifier's columns plus one Linear per gate."
    else:
        combine = f"self.{name}[1:](self.{name}[0](pooled) + sum(gated))"
        doc = "The gated features join the classifier's first Linear, before its ReLU (one Linear over all)."
    model_class = f"Gated{_MODEL_CLASS[family]}"
    wrapper = _template("gated_model").substitute(
        model_class=model_class,
        base_class=_MODEL_CLASS[family],
        backbone=candidate.backbone.name,
        aggregation=model.aggregation if model.aggregation in AGGREGATIONS else "",
        head_doc=doc,
        taps="\n".join(f'{_ITEM}"{key}": "{slot}",' for key, slot in taps.items()),
        gating="\n".join(
            f'{_ITEM}"{_identifier(s, "slot")}": "{_identifier(g, "slot")}",' for s, g in model.gating.items()
        ),
        gates="\n".join(gates),
        heads="\n".join(heads),
        walk=_WALK[family],
        pooled=_POOLED[family],
        combine=combine,
    )
    return GateCode([_template("attention_gate").substitute(), wrapper], model_class, frozenset({"F"}))
