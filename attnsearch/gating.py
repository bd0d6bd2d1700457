"""Attention gates placed in a backbone: the gated model, and the checks of where a gate may go.

A ``gate`` placement (:class:`attnsearch.attention.gate.AttentionGate`) is not inserted into the backbone's
feature stack: the slot's map x passes on unchanged, and the gate reads x and the gating slot's map g beside the
backbone (forward hooks at the two slots' probe modules, for the length of one forward pass). Its pooled gated
features (B, C_x) join the classifier (Schlemper et al., Medical Image Analysis 2019, arXiv 1808.08114):

- ``concat``: one linear classifier over [f; g_1; ...; g_k], f the backbone's pooled features. Written as the
  backbone's own head on f plus one bias-free Linear per gated slot on g_s, summed: the same function (W [f; g]
  + b = W_f f + b + sum_s W_s g_s), and every backbone tensor keeps its name and shape. A classic VGG head (an
  MLP) receives the gated features at its first Linear, before the ReLU.
- ``mean``: the paper's separate heads, one Linear per gated slot beside the backbone's head, logits averaged.

Where a gate may go: a slot after a block or stage, or a conv slot (not a per-layer slot such as
``denseblock2_layers``); its gating slot (``gating_slot``, default the backbone's last block-level slot) must come
later in the forward pass than the gated slot (a coarser map; the same map is refused too). In a space file,
``slots: {all: [none, gate]}`` offers the gate only at slots before the gating slot: the gating slot itself and
those after it keep their other choices; a slot named explicitly with a gate it cannot hold is an error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .attention import module_info
from .attention.gate import AttentionGate
from .backbones import Slot, SlotSite, build_backbone, describe_names, slot_sites
from .errors import AttnsearchError

__all__ = ["GATE", "GatedModel", "attach_gates", "gate_slot_choices", "split_gates"]

GATE = "gate"


@functools.lru_cache(maxsize=32)
def _slot_order(backbone: str) -> tuple[dict[str, int], frozenset[str], str, dict[str, str]]:
    """Forward rank of each non-per-layer slot (equal for slots that see one map), the per-layer slots, the last
    block-level slot, and each slot's probe (the module whose output is its map) in the plain backbone, before any
    module is inserted. Traced once per process on the meta device; none of it depends on a size."""
    with torch.device("meta"):
        model = build_backbone(backbone, width=0.125, head="compact", num_classes=1)
    sites = slot_sites(model)
    fired: list[str] = []
    handles = []
    for path in dict.fromkeys(s.probe for s in sites if not s.per_layer):

        def record(_m: nn.Module, _i: object, _o: object, path: str = path) -> None:
            if path not in fired:
                fired.append(path)

        handles.append(model.get_submodule(path).register_forward_hook(record))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 224, 224, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    ranks = {s.name: fired.index(s.probe) for s in sites if not s.per_layer}
    last = max((s for s in sites if s.block_level), key=lambda s: ranks[s.name]).name
    return ranks, frozenset(s.name for s in sites if s.per_layer), last, {s.name: s.probe for s in sites}


def _gating_problem(backbone: str, slot: str, gating_slot: str | None) -> tuple[str, str] | None:
    """(which part is wrong: "slot" | "gating_slot", why) for a gate at ``slot`` gated by ``gating_slot``."""
    ranks, per_layer, last, _ = _slot_order(backbone)
    if slot in per_layer:
        return "slot", (
            f"a gate cannot go in the per-layer slot {slot} (one module inside every layer); "
            "place it after a block or stage"
        )
    gating = last if gating_slot is None else gating_slot
    if gating in per_layer:
        return "gating_slot", f"{gating} is a per-layer slot; the gating signal is a slot after a block or stage"
    if gating not in ranks:
        return "gating_slot", f"unknown slot {gating!r} for {backbone}; valid: {describe_names(ranks)}"
    if ranks[gating] <= ranks[slot]:
        where = "sees the same map as" if ranks[gating] == ranks[slot] else "comes before"
        default = " (the default: the last block)" if gating_slot is None else ""
        return "slot", (
            f"the gate at {slot} needs a gating slot later in the network (a coarser map); "
            f"its gating_slot {gating}{default} {where} {slot}"
        )
    return None


def split_gates(
    chosen: Mapping[str, tuple[str, dict]],
) -> tuple[dict[str, tuple[str, dict]], dict[str, dict]]:
    """``build_model``'s placements without the gates, and the gates: slot -> parameters."""
    gated = {slot: dict(params) for slot, (key, params) in chosen.items() if key == GATE}
    return {slot: value for slot, value in chosen.items() if slot not in gated}, gated


def gate_slot_choices(
    backbone: str,
    slots: dict[str, list[str]],
    explicit: set[str],
    params: Mapping[str, list[Any]],
) -> dict[str, list[str]]:
    """A space's slot choices for ``backbone`` with every gate checked (``parse_space``'s part).

    ``explicit``: the slots the file names (the others came from ``all:``); ``params``: ``modules.gate``'s values.
    A gate ``all:`` offered where it cannot go is withdrawn there; a named slot's is a SpaceError naming both
    slots. Several gated slots with several aggregations to draw from could disagree: refused.
    """
    from .spacefile import SpaceError

    offering = [slot for slot, choices in slots.items() if GATE in choices]
    if not offering:
        return slots
    if len(params.get("aggregation", [])) > 1 and len(offering) > 1:
        raise SpaceError(
            "modules.gate.aggregation: give one value when several slots may hold a gate (a model has one head)"
        )
    result = dict(slots)
    for slot in offering:
        for gating in params.get("gating_slot", [None]):
            problem = _gating_problem(backbone, slot, gating)
            if problem is None:
                continue
            part, why = problem
            if part == "gating_slot":
                raise SpaceError(f"modules.gate.gating_slot: {why}")
            if slot in explicit:
                raise SpaceError(f"slots.{slot}: {why}")
            result[slot] = [c for c in result[slot] if c != GATE] or ["none"]  # from `all:`: not offered here
    return result


def attach_gates(
    model: nn.Module,
    backbone: str,
    gated: Mapping[str, dict],
    shapes: Mapping[str, Slot],
    *,
    num_classes: int,
) -> GatedModel:
    """``model`` (a built backbone, other modules already placed) with an attention gate at each slot of
    ``gated`` (slot -> the gate's parameters). Raises AttnsearchError for a gate where it cannot go."""
    aggregations = {params.get("aggregation", "concat") for params in gated.values()}
    if len(aggregations) > 1:
        raise AttnsearchError(f"gate: every gate of a model shares one head; got aggregations {sorted(aggregations)}")
    gates: dict[str, AttentionGate] = {}
    gating: dict[str, str] = {}
    for slot, params in gated.items():
        problem = _gating_problem(backbone, slot, params.get("gating_slot"))
        if problem is not None:
            raise AttnsearchError(f"slot {slot}: {problem[1]}")
        gating[slot] = params.get("gating_slot") or _slot_order(backbone)[2]
        x, g = shapes[slot], shapes[gating[slot]]
        stride = max(1, x.height // g.height)  # W_x takes x to g's grid
        try:
            gates[slot] = module_info(GATE).cls(x.channels, g.channels, stride, **params)  # type: ignore[call-arg]
        except ValueError as err:
            raise AttnsearchError(f"gate: {err}") from None
    probes = _slot_order(backbone)[3]
    maps = {slot: probes[slot] for slot in dict.fromkeys([*gating, *gating.values()])}
    return GatedModel(model, gates, gating, maps, aggregation=aggregations.pop(), num_classes=num_classes)


class GatedModel(nn.Module):
    """A backbone whose classifier also reads attention-gated features of some of its slots.

    The backbone's children are this module's children under their own names, so its state_dict is the
    backbone's (``features.0.weight``, ``classifier.weight``...) plus ``gates.<slot>.*`` and ``gate_heads.<slot>.*``;
    a plain model's weights copy in by name (:func:`attnsearch.search.worker.share_backbone`). The backbone
    provides ``HEAD`` (its classifier's attribute), ``pooled(x)`` (everything before it) and ``slot_sites()``.
    ``gating`` maps each gated slot to its gating slot, ``probes`` each of those slots to the module whose output
    is its map (:func:`attach_gates` builds them; the gates' shapes must fit those maps).

    Example:
        >>> from attnsearch import build_model
        >>> model = build_model("vgg11_bn", {"block3": "gate"}, num_classes=10, width=0.125, head="compact",
        ...                     image_size=32)
        >>> model(torch.randn(2, 3, 32, 32)).shape, model.gate_maps(torch.randn(2, 3, 32, 32))["block3"].shape
        (torch.Size([2, 10]), torch.Size([2, 8, 8]))
    """

    def __init__(
        self,
        backbone: nn.Module,
        gates: Mapping[str, AttentionGate],
        gating: Mapping[str, str],
        probes: Mapping[str, str],
        *,
        aggregation: str,
        num_classes: int,
    ) -> None:
        super().__init__()
        for name, child in backbone.named_children():
            self.add_module(name, child)
        self.__dict__["backbone"] = backbone  # not a child: its children are ours already, under their names
        self.aggregation = aggregation
        self.gating = dict(gating)  # gated slot -> gating slot
        self.probes = dict(probes)  # slot -> the module whose output is its map (before any module placed there)
        self.gates = nn.ModuleDict(gates)
        head = getattr(self, backbone.HEAD)  # type: ignore[arg-type]
        if aggregation == "mean":  # the paper's separate classifiers, one per gated slot
            heads = {slot: nn.Linear(gate.channels, num_classes) for slot, gate in gates.items()}
        else:  # concat: the columns of one classifier over [f; g_1; ...], at the head's first Linear
            first = head if isinstance(head, nn.Linear) else head[0] if isinstance(head, nn.Sequential) else None
            if not isinstance(first, nn.Linear):
                raise AttnsearchError("gate: aggregation concat needs a classifier that starts with a Linear layer")
            heads = {slot: nn.Linear(gate.channels, first.out_features, bias=False) for slot, gate in gates.items()}
        self.gate_heads = nn.ModuleDict(heads)

    def slot_sites(self) -> list[SlotSite]:
        return self.backbone.slot_sites()

    def _maps(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The backbone's pooled features (B, F) and the maps of the gated and gating slots."""
        maps: dict[str, Tensor] = {}
        handles = []
        for slot, path in self.probes.items():

            def keep(_m: nn.Module, _i: object, out: Tensor, slot: str = slot) -> None:
                maps.setdefault(slot, out)

            handles.append(self.get_submodule(path).register_forward_hook(keep))
        try:
            return self.backbone.pooled(x), maps
        finally:
            for handle in handles:
                handle.remove()

    def gated_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The backbone's pooled features (B, F) and each gate's pooled gated features, slot -> (B, C_slot)."""
        pooled, maps = self._maps(x)
        return pooled, {slot: gate(maps[slot], maps[self.gating[slot]]) for slot, gate in self.gates.items()}

    def forward(self, x: Tensor) -> Tensor:
        pooled, gated = self.gated_features(x)
        head = getattr(self, self.backbone.HEAD)
        terms = [self.gate_heads[slot](g) for slot, g in gated.items()]
        if self.aggregation == "mean":
            return torch.stack([head(pooled), *terms]).mean(dim=0)
        if isinstance(head, nn.Linear):
            return head(pooled) + sum(terms)
        return head[1:](head[0](pooled) + sum(terms))  # the MLP head: gated features join its first Linear

    def gate_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Each gate's attention coefficients at its slot's map size: slot -> (B, H_slot, W_slot), in [0, 1]."""
        _, maps = self._maps(x)
        return {slot: gate.alpha(maps[slot], maps[self.gating[slot]])[:, 0] for slot, gate in self.gates.items()}
