"""What a space holds before anything trains: its size, its slot x module table, and its range of costs.

A module's cost at a slot does not depend on what sits in the other slots (it never changes a feature map's
shape), so each (slot, module, parameters) option is costed once, on the meta device, and a candidate's cost is
the plain backbone's plus the sum of its options' costs. That makes the whole space's range exact and cheap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention import effective_params
from ..costs import count_flops
from ..effective import distinct_size, effective_notes
from ..model import build_model, list_slots
from ..space import SearchSpace

__all__ = ["SpaceSurvey", "survey_space"]

ENUMERATE_LIMIT = 200_000  # candidates checked one by one against the constraints; above it, per-slot bounds only


@dataclass
class SpaceSurvey:
    size: int  # distinct candidates, a searched range counting as one choice
    table: dict[str, list[str]]  # slot -> modules tried there (first backbone)
    params: tuple[int, int]  # min, max over the space
    flops: tuple[int, int]
    violations: int | None = None  # candidates that break a constraint; None when not enumerated
    examples: list[str] = field(default_factory=list)  # a few of them, written compactly
    checked: bool = True  # False when the space was too large to check candidate by candidate
    notes: list[str] = field(default_factory=list)  # picks a module cannot honour at a slot (attnsearch.effective)


def _costs(
    backbone: str, placements: dict[str, Any], width: float, head: str, image_size: int, stem: str
) -> tuple[int, int]:
    with torch.device("meta"):
        model = build_model(
            backbone, placements, num_classes=10, width=width, head=head, image_size=image_size, stem=stem
        )
    params = sum(p.numel() for p in model.parameters())
    return params, count_flops(model, (1, 3, image_size, image_size))


def survey_space(space: SearchSpace) -> SpaceSurvey:
    """Size, table and cost range of ``space``; every candidate is checked against the constraints when feasible."""
    config = space.config
    image_size = config.data.image_size
    stem = config.backbone.stem
    limits = config.search.constraints
    widths = config.backbone.width if isinstance(config.backbone.width, list) else [config.backbone.width]
    heads = config.backbone.head if isinstance(config.backbone.head, list) else [config.backbone.head]
    low, high = [float("inf")] * 2, [0.0] * 2
    violations, examples = 0, []
    size = distinct_size(space)  # picks that build one module count once
    checked = size <= ENUMERATE_LIMIT
    for backbone, width, head in itertools.product(space.backbones, widths, heads):
        base = _costs(backbone, {}, width, head, image_size, stem)
        channels = {s.name: s.channels for s in list_slots(backbone, image_size=image_size, width=width, stem=stem)}
        options: list[list[tuple[str, tuple[int, int]]]] = []
        for slot, modules in space.slots[backbone].items():
            per_slot, seen = [], set()
            for module in modules:
                if module == "none":
                    per_slot.append(("", (0, 0)))
                    continue
                params = space.module_params.get(module, {})
                for values in itertools.product(*params.values()):
                    chosen = effective_params(module, channels[slot], dict(zip(params, values, strict=True)))
                    if (module, repr(sorted(chosen.items()))) in seen:
                        continue
                    seen.add((module, repr(sorted(chosen.items()))))
                    cost = _costs(backbone, {slot: {"type": module, **chosen}}, width, head, image_size, stem)
                    label = f"{slot}={module}" + (
                        f"({','.join(f'{k}={v}' for k, v in chosen.items())})" if chosen else ""
                    )
                    per_slot.append((label, (cost[0] - base[0], cost[1] - base[1])))
            options.append(per_slot)
        for i in range(2):
            low[i] = min(low[i], base[i] + sum(min(o[1][i] for o in slot) for slot in options))
            high[i] = max(high[i], base[i] + sum(max(o[1][i] for o in slot) for slot in options))
        if checked and (limits.max_params or limits.max_flops):
            for combo in itertools.product(*options):
                p = base[0] + sum(c[1][0] for c in combo)
                f = base[1] + sum(c[1][1] for c in combo)
                if (limits.max_params and p > limits.max_params) or (limits.max_flops and f > limits.max_flops):
                    violations += 1
                    if len(examples) < 5:
                        examples.append(" ".join(c[0] for c in combo if c[0]) or f"{backbone} baseline")
    first = space.backbones[0]
    return SpaceSurvey(
        size=size,
        table=dict(space.slots[first]),
        params=(int(low[0]), int(high[0])),
        flops=(int(low[1]), int(high[1])),
        violations=violations if checked else None,
        examples=examples,
        checked=checked,
        notes=effective_notes(space),
    )
