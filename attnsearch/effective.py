"""The parameters a module actually uses at a slot: candidates carry them, and a space says where picks collapse.

A module cannot always honour a parameter at a slot's width: SE at 8 channels builds the same hidden width of 1
for reduction 16 and 64, MHSA cuts its heads to a divisor of the channels. Each module says how through its
``effective_params`` (:func:`attnsearch.attention.registry.effective_params`). Here that is applied to the
candidates a space draws (so two names for one network are one candidate, trained once), counted (the distinct
candidates ``attnsearch validate`` reports) and said (one note per case).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

from .candidate import Candidate

__all__ = ["canonical_candidate", "changed_params", "distinct_size", "effective_notes"]


def _slot_channels(backbone: str, image_size: int, width: float, stem: str) -> dict[str, int]:
    from .model import list_slots

    return {s.name: s.channels for s in list_slots(backbone, image_size=image_size, width=width, stem=stem)}


def canonical_candidate(candidate: Candidate) -> Candidate:
    """``candidate`` with each placement's parameters replaced by those its module uses at that slot's channels.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, PlacementSpec
        >>> c = Candidate(BackboneSpec("vgg11_bn", width=0.125), (PlacementSpec("block1", "se", (("reduction", 64),)),))
        >>> canonical_candidate(c).placements[0].params
        (('reduction', 8),)
    """
    if not candidate.placements:
        return candidate
    from .attention import effective_params

    b = candidate.backbone
    channels = _slot_channels(b.name, candidate.data.image_size, b.width, b.stem)
    placements = []
    for p in candidate.placements:
        used = effective_params(p.module, channels[p.slot], dict(p.params)) if p.params else {}
        placements.append(dataclasses.replace(p, params=tuple(sorted(used.items()))))
    return dataclasses.replace(candidate, placements=tuple(placements))


def changed_params(space: Any, candidate: Candidate, picks: dict[str, Any]) -> list[str]:
    """One phrase per placement of ``candidate`` (drawn by ``space``) whose parameters differ from the trial's
    ``picks`` (its Optuna parameters): ``block1=se reduction 8 (picked reduction 64)``."""
    out = []
    for p in candidate.placements:
        values = space.module_params.get(p.module, {})
        picked = {k: picks.get(f"{p.slot}.{p.module}.{k}", v[0]) for k, v in values.items()}
        if picked != dict(p.params):
            out.append(f"{p.slot}={p.module} {_describe(dict(p.params))} (picked {_describe(picked)})")
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _describe(params: dict[str, Any]) -> str:
    """``kernel_size 3, reduction 8``: the parameters by name (sorted, so the order they were written in says
    nothing), or ``(defaults)``."""
    return ", ".join(f"{k} {_fmt(params[k])}" for k in sorted(params)) or "(defaults)"


def _groups(space: Any) -> list[tuple[str, str, str, int, dict[tuple, list[dict[str, Any]]]]]:
    """Per (backbone, width, slot, module with parameters): the picks grouped by the parameters used."""
    from .attention import effective_params

    config = space.config
    widths = config.backbone.width if isinstance(config.backbone.width, list) else [config.backbone.width]
    found = []
    for backbone, width in itertools.product(space.backbones, widths):
        channels = _slot_channels(backbone, config.data.image_size, width, config.backbone.stem)
        for slot, modules in space.slots[backbone].items():
            for module in modules:
                params = space.module_params.get(module, {})
                if module == "none" or not params:
                    continue
                groups: dict[tuple, list[dict[str, Any]]] = {}
                for values in itertools.product(*params.values()):
                    picked = dict(zip(params, values, strict=True))
                    used = effective_params(module, channels[slot], picked)
                    groups.setdefault(tuple(sorted(used.items(), key=lambda kv: kv[0])), []).append(picked)
                found.append((backbone, slot, module, channels[slot], groups))
    return found


def distinct_size(space: Any) -> int:
    """Distinct candidates of ``space`` once each pick is replaced by the parameters its module uses (a searched
    range counting as one choice); :meth:`SearchSpace.size` counts the picks.

    Example:
        >>> from attnsearch.space import parse_space
        >>> space = parse_space({"name": "d", "backbone": {"name": "vgg11_bn", "width": 0.125},
        ...                      "slots": {"block1": ["se"]}, "modules": {"se": {"reduction": [16, 64]}}})
        >>> space.size(), distinct_size(space)
        (2, 1)
    """
    from .attention import effective_params

    config = space.config
    total = 0
    for base in _bases(space):
        backbone = base.get("backbone", space.backbones[0])
        width = base.get("width", _first(config.backbone.width))
        channels = _slot_channels(backbone, config.data.image_size, width, config.backbone.stem)
        per_slot = []
        for slot, modules in space.slots[backbone].items():
            options = set()
            for module in modules:
                params = space.module_params.get(module, {})
                for values in itertools.product(*params.values()):
                    used = effective_params(module, channels[slot], dict(zip(params, values, strict=True)))
                    options.add((module, repr(sorted(used.items(), key=lambda kv: kv[0]))))
            per_slot.append(len(options))
        total += math.prod(per_slot)
    return total


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def _bases(space: Any) -> list[dict[str, Any]]:
    choices = space._categoricals()  # the searched backbone and recipe fields, each with its choices
    return [dict(zip(choices, values, strict=True)) for values in itertools.product(*choices.values())]


def effective_notes(space: Any) -> list[str]:
    """One line per case where the space's picks are not what a module uses: picks that build one module, or a
    value the module changes (``note: mhsa at block1 (6 channels): heads 4 is recorded as heads 3 (...)``)."""
    notes: list[str] = []
    for backbone, slot, module, channels, groups in _groups(space):
        where = f"note: {module} at {slot}" + (f" of {backbone}" if len(space.backbones) > 1 else "")
        where += f" ({channels} channels)"
        for used, picks in groups.items():
            as_used = _describe(dict(used))
            if len(picks) > 1:
                varying = [k for k in picks[0] if len({repr(p[k]) for p in picks}) > 1]
                if len(varying) == 1:
                    said = f"{varying[0]} " + " and ".join(_fmt(p[varying[0]]) for p in picks)
                else:
                    said = " and ".join(f"({_describe(p)})" for p in picks)
                line = f"{where}: {said} build the same module ({as_used}); they count as one candidate"
            elif _describe(picks[0]) != as_used:
                line = f"{where}: {_describe(picks[0])} is recorded as {as_used} (the same module at this width)"
            else:
                continue
            if line not in notes:
                notes.append(line)
    return notes
