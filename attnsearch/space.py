"""The search space: a YAML file becomes a validated :class:`SearchSpace`, which turns Optuna trials into Candidates.

Validation is strict: an unknown key, module, backbone or slot, a wrong type, an empty list or an out-of-range
number is one :class:`SpaceError` whose message starts with the YAML path, e.g.
``slots.block7: unknown slot for vgg16_bn; valid: block1..block5, conv1_1..conv5_3``.

The file's sections and their schema are :mod:`attnsearch.spacefile`'s.
"""

from __future__ import annotations

import itertools
import math
import os
import typing
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel, ValidationError

from .candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec, TrainRecipe
from .effective import canonical_candidate
from .schema import Range, describe_error
from .search.settings import Constraints
from .spacefile import SpaceError, SpaceFile, _check_unknown_keys
from .yamlfile import YamlError, read_yaml

__all__ = ["SearchSpace", "SpaceError", "load_space", "parse_space"]

GRID_LIMIT = 10_000  # candidates `sampler: grid` enumerates without --force


# ---------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file, and the bridge from an Optuna trial to a :class:`Candidate`.

    Example:
        >>> space = parse_space({"name": "demo", "backbone": {"name": "vgg11", "width": 0.125},
        ...                      "slots": {"block3": ["none", "se"]}})
        >>> space.size()
        2
    """

    config: SpaceFile
    slots: dict[str, dict[str, list[str]]]  # backbone -> slot -> module keys ('none' included)
    module_params: dict[str, dict[str, list[Any]]]  # module -> parameter -> values to try (one value: fixed)
    source: dict[str, Any]  # the parsed YAML, as written

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def backbones(self) -> list[str]:
        return _as_list(self.config.backbone.name)

    @property
    def pruner_warmup(self) -> int:
        """Epochs the median pruner waits before it may stop a trial: three quarters of them (rounded down).

        Early epochs of a brief training predict the final score poorly. On the ``bench search`` grid (8 epochs)
        the correlation of an epoch's score with the final one is -0.03, 0.32, 0.54, 0.70, 0.81, 0.94, 0.97 after
        epochs 1 to 7; replayed there, judging from epoch 4 lost the best candidates in 4 of 20 searches, judging
        from epoch 5 or 6 in none, at no more compute (12 to 13% of the grid).
        """
        return 3 * self.config.train.epochs // 4

    @property
    def first_val_epoch(self) -> int:
        """The first epoch a trial validates (and reports) after: the first the pruner can act on.

        With ``train.epoch_val: all``, and under Hyperband (whose rungs start at epoch 1), every epoch; without a
        pruner (as in every search with several objectives), the last epoch alone.
        """
        config = self.config
        if config.train.epoch_val == "all" or config.search.pruner == "hyperband":
            return 1
        if config.search.pruner == "none":
            return config.train.epochs
        return max(1, self.pruner_warmup)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.config.search.objectives]

    def target(self, n_trials: int | None = None) -> int:
        """Trials the study is to finish: the whole design of ``grid`` and ``ablation``, else ``n_trials`` (default
        ``search.n_trials``)."""
        sampler = self.config.search.sampler
        if sampler in ("grid", "ablation"):
            design = self.size() if sampler == "grid" else len(self.ablation())
            if n_trials is not None and n_trials != design:
                raise SpaceError(
                    f"--trials {n_trials}: sampler {sampler} trains its whole design ({design} candidates); "
                    "use sampler tpe or random to cap the trials"
                )
            return design
        return n_trials or self.config.search.n_trials

    def design(self, *, force: bool = False) -> list[dict[str, Any]] | None:
        """The trials ``grid`` and ``ablation`` enqueue (as Optuna parameters); None for the other samplers.

        Raises SpaceError for a grid above :data:`GRID_LIMIT` candidates unless ``force``.
        """
        sampler = self.config.search.sampler
        if sampler == "ablation":
            return self.ablation()
        if sampler != "grid":
            return None
        size = self.size()
        if size > GRID_LIMIT and not force:
            raise SpaceError(
                f"search.sampler: grid of {size:,} candidates is above {GRID_LIMIT:,}; pass --force to run it"
            )
        return self.grid()

    def constraints(self) -> Constraints:
        return Constraints(**self.config.search.constraints.model_dump())

    # -- the parameters Optuna sees ------------------------------------------------------------------------------

    def _searched(self) -> list[tuple[str, Any]]:
        """(Optuna parameter name, the section's value) of every searchable field, backbone's then recipe's.

        The backbone's name is the parameter ``backbone``; every other keeps its field's name.
        """
        b, t = self.config.backbone, self.config.train
        found = [("backbone" if f.name == "name" else f.name, getattr(b, f.name)) for f in _searchable(BackboneSpec)]
        return found + [(f.name, getattr(t, f.name)) for f in _searchable(TrainRecipe)]

    def _categoricals(self) -> dict[str, list[Any]]:
        """Searched non-slot parameters with their choices (ranges excluded)."""
        found = {name: _as_list(value) for name, value in self._searched() if not isinstance(value, Range)}
        return {k: v for k, v in found.items() if len(v) > 1}

    def _ranges(self) -> dict[str, Range]:
        return {name: value for name, value in self._searched() if isinstance(value, Range)}

    def suggest(self, trial: Any, *, seed_offset: int = 0) -> Candidate:
        """Draw a Candidate through ``trial`` (an ``optuna.Trial``, or anything with its ``suggest_*`` methods)."""
        categoricals, ranges = self._categoricals(), self._ranges()

        def pick(name: str, value: Any) -> Any:
            if name in ranges:
                r = ranges[name]
                return trial.suggest_float(name, r.low, r.high, log=r.log)
            if name in categoricals:
                return trial.suggest_categorical(name, categoricals[name])
            return _as_list(value)[0]

        name = pick("backbone", self.config.backbone.name)
        placements = []
        for slot, choices in self.slots[name].items():
            module = trial.suggest_categorical(slot, choices) if len(choices) > 1 else choices[0]
            if module == "none":
                continue
            params = []
            for param, values in self.module_params.get(module, {}).items():
                value = trial.suggest_categorical(f"{slot}.{module}.{param}", values) if len(values) > 1 else values[0]
                params.append((param, value))
            placements.append(PlacementSpec(slot, module, tuple(sorted(params))))
        train = _spec(TrainRecipe, self.config.train, pick)
        # the backbone's other fields last, as they always were drawn: a seeded sampler draws the same values
        backbone = _spec(
            BackboneSpec, self.config.backbone, lambda field, value: name if field == "name" else pick(field, value)
        )
        picked = Candidate(backbone, tuple(placements), train, self.data_spec(), self.config.train.seed + seed_offset)
        return canonical_candidate(picked)  # the parameters each module uses at its slot: one network, one candidate

    def data_spec(self) -> DataSpec:
        return DataSpec(**self.config.data.model_dump())

    # -- enumerations --------------------------------------------------------------------------------------------

    def _slot_param_sets(self, backbone: str) -> list[list[dict[str, Any]]]:
        """Per slot of ``backbone``: every Optuna parameter assignment that slot can take."""
        per_slot = []
        for slot, choices in self.slots[backbone].items():
            options: list[dict[str, Any]] = []
            for module in choices:
                searched = {p: v for p, v in self.module_params.get(module, {}).items() if len(v) > 1}
                for values in itertools.product(*searched.values()):
                    assignment = {f"{slot}.{module}.{p}": v for p, v in zip(searched, values, strict=True)}
                    options.append({slot: module, **assignment} if len(choices) > 1 else assignment)
            per_slot.append(options)
        return per_slot

    def grid(self) -> list[dict[str, Any]]:
        """Every distinct candidate as Optuna parameters (for ``sampler: grid``)."""
        self._require_discrete("grid")
        categoricals = self._categoricals()
        combos = []
        for base in _product_dicts(categoricals):
            backbone = base.get("backbone", self.backbones[0])
            for slots in itertools.product(*self._slot_param_sets(backbone)):
                combos.append({**base, **{k: v for d in slots for k, v in d.items()}})
        return combos

    def ablation(self) -> list[dict[str, Any]]:
        """The baseline (nothing placed) plus every single (slot, module) placement alone."""
        self._require_discrete("ablation")
        if len(self.backbones) > 1 or self._categoricals():
            names = ", ".join(self._categoricals())
            raise SpaceError(f"search.sampler: ablation needs one fixed recipe; these are searched: {names}")
        slots = self.slots[self.backbones[0]]
        baseline = {slot: "none" for slot, choices in slots.items() if len(choices) > 1}
        design = [baseline]
        for slot, options in zip(slots, self._slot_param_sets(self.backbones[0]), strict=True):
            for option in options:
                if option.get(slot, slots[slot][0]) != "none":
                    design.append({**baseline, **option})
        return design

    def _require_discrete(self, sampler: str) -> None:
        if self._ranges():
            names = ", ".join(f"train.{n}" for n in self._ranges())
            raise SpaceError(f"search.sampler: {sampler} needs discrete choices; {names} is a range (give a list)")

    @property
    def ranges(self) -> list[str]:
        """Parameters searched over a continuous range (``train.lr``, ``train.weight_decay``)."""
        return [f"train.{name}" for name in self._ranges()]

    def size(self) -> int:
        """Number of distinct candidates, counting each searched range as one choice."""
        total = 0
        categoricals = self._categoricals()
        for base in _product_dicts(categoricals):
            backbone = base.get("backbone", self.backbones[0])
            total += math.prod(len(options) for options in self._slot_param_sets(backbone))
        return total


def _searchable(cls: type) -> list[Any]:
    return [f for f in fields(cls) if f.metadata.get("searched")]


def _spec(cls: type, section: BaseModel, pick: Any) -> Any:
    """A ``cls`` (BackboneSpec, TrainRecipe) from its space-file section: each searchable field through ``pick``
    (name, section value) -> the trial's value, the others as written; numbers typed as the field is."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        value = getattr(section, f.name)
        value = pick(f.name, value) if f.metadata.get("searched") else value
        if hints[f.name] is float and not isinstance(value, bool):
            value = float(value)  # a YAML integer where a float belongs: the same candidate as its float
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _product_dicts(choices: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(choices, values, strict=True)) for values in itertools.product(*choices.values())]


# ---------------------------------------------------------------------------------------------- parsing


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a space file. Raises :class:`SpaceError` (one line) for any problem."""
    try:
        data = read_yaml(path)
    except YamlError as err:
        raise SpaceError(str(err)) from None
    return parse_space(data)


def parse_space(data: Any, *, check_data: bool = True) -> SearchSpace:
    """Validate parsed YAML. ``check_data`` also checks that the dataset can be found (cheap, no loading)."""
    if not isinstance(data, dict):
        raise SpaceError(f"(top level): a space file is a mapping of sections, got {type(data).__name__}")
    _check_unknown_keys(SpaceFile, data, "")
    try:
        config = SpaceFile.model_validate(data)
    except ValidationError as err:
        raise SpaceError(describe_error(err, data)) from None
    from .attention import check_params, list_modules  # torch: only once the file itself is sound
    from .backbones import backbone_info, describe_names, list_backbones
    from .model import list_slots

    backbones = _as_list(config.backbone.name)
    for i, name in enumerate(backbones):
        if name not in list_backbones():
            where = "backbone.name" + (f"[{i}]" if isinstance(config.backbone.name, list) else "")
            valid = ", ".join(list_backbones())
            raise SpaceError(f"{where}: unknown backbone {name!r}; valid: {valid}; a plug-in? pass --plugin FILE")
    if config.backbone.pretrained:
        if config.backbone.stem != "imagenet":
            raise SpaceError("backbone.pretrained: torchvision's weights are for the imagenet stem only")
        for name in backbones:
            from .backbones import pretrained_path

            try:
                pretrained_path(backbone_info(name))
            except ValueError as err:
                raise SpaceError(f"backbone.pretrained: {err}") from None

    modules, hint = list_modules(), "a plug-in module? pass --plugin FILE"  # a space file never imports one
    for slot, choices in config.slots.items():
        for i, key in enumerate(choices):
            if key not in modules:
                raise SpaceError(
                    f"slots.{slot}[{i}]: unknown attention module {key!r}; valid: {', '.join(modules)}; {hint}"
                )
        if len(set(choices)) != len(choices):
            raise SpaceError(f"slots.{slot}: a module is listed twice")

    slots: dict[str, dict[str, list[str]]] = {}
    image_size = config.data.image_size
    stem = config.backbone.stem
    for name in backbones:
        if stem != "imagenet" and backbone_info(name).family != "resnet":
            raise SpaceError(f"backbone.stem: {stem!r} applies to ResNet backbones only, not {name}")
        per_backbone: dict[str, list[str]] = {}
        for width in _as_list(config.backbone.width):  # the same slots at every width; each must fit the images
            try:
                available = list_slots(name, image_size=image_size, width=width, stem=stem)
            except ValueError as err:
                raise SpaceError(f"data.image_size: {err}") from None
        names = [s.name for s in available]
        for slot, choices in config.slots.items():
            if slot == "all":
                for s in available:
                    if s.block_level:
                        per_backbone.setdefault(s.name, list(choices))
            elif slot not in names:
                raise SpaceError(f"slots.{slot}: unknown slot for {name}; valid: all, {describe_names(names)}")
            else:
                per_backbone[slot] = list(choices)  # a named slot overrides 'all'
        order = {s: i for i, s in enumerate(names)}
        slots[name] = {s: per_backbone[s] for s in sorted(per_backbone, key=order.__getitem__)}

    module_params: dict[str, dict[str, list[Any]]] = {}
    for key, params in config.modules.items():
        if key not in modules or key == "none":
            valid = ", ".join(m for m in modules if m != "none")
            raise SpaceError(f"modules.{key}: unknown attention module; valid: {valid}; {hint}")
        module_params[key] = {}
        for param, value in params.items():
            values = _as_list(value)
            for v in values:
                try:
                    check_params(key, {param: v})
                except ValueError as err:
                    raise SpaceError(f"modules.{key}.{param}: {_strip_key(str(err), key)}") from None
            if len(set(map(repr, values))) != len(values):
                raise SpaceError(f"modules.{key}.{param}: a value is listed twice")
            module_params[key][param] = values
        _check_module_values(key, module_params[key])
    from .gating import gate_slot_choices  # a gate needs a later gating slot: checked, or withdrawn from `all:`

    gate_params = module_params.get("gate", {})
    slots = {name: gate_slot_choices(name, s, set(config.slots), gate_params) for name, s in slots.items()}

    search = config.search
    if len(search.objectives) > 1 and search.pruner != "none":
        raise SpaceError("search.pruner: pruning needs a single objective; set pruner: none for a Pareto search")
    metrics = [o.metric for o in search.objectives]
    if len(set(metrics)) != len(metrics):
        raise SpaceError("search.objectives: a metric is listed twice")
    confirm = search.confirm
    if confirm is not None and confirm.epochs is not None and config.train.steps is not None:
        raise SpaceError("search.confirm.epochs: the recipe's budget is train.steps; leave epochs out (null)")
    if config.execution.executor == "local" and config.execution.address is not None:
        raise SpaceError("execution.address: only used with executor: ray")
    if check_data:
        from .data import check_data as check_dataset

        try:
            check_dataset(DataSpec(**config.data.model_dump()))
        except ValueError as err:
            raise SpaceError(f"data: {err}") from None
    space = SearchSpace(config=config, slots=slots, module_params=module_params, source=data)
    if search.sampler in ("grid", "ablation"):
        (space.grid if search.sampler == "grid" else space.ablation)()  # refuses ranges, early
    return space


def _strip_key(message: str, key: str) -> str:
    return message.removeprefix(f"{key}: ")


def _check_module_values(key: str, params: dict[str, list[Any]]) -> None:
    """Build each module once per value, at a small width, so range errors surface here, not mid-search."""
    from .attention import create_module

    for param, values in params.items():
        for value in values:
            try:
                create_module(key, 16, **{param: value})
            except ValueError as err:
                raise SpaceError(f"modules.{key}.{param}: {_strip_key(str(err), key)}") from None
