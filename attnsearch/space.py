"""The search space: a YAML file becomes a validated :class:`SearchSpace`, which turns Optuna trials into Candidates.

Validation is strict: an unknown key, module, backbone or slot, a wrong type, an empty list or an out-of-range
number is one :class:`SpaceError` whose message starts with the YAML path, e.g.
``slots.block7: unknown slot for vgg16_bn; valid: block1..block5, conv1_1..conv5_3``.
"""

from __future__ import annotations

import itertools
import math
import os
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .device import DEVICE_PATTERN
from .errors import AttnsearchError
from .candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec, TrainRecipe
from .yamlfile import YamlError, read_yaml

__all__ = ["SearchSpace", "SpaceError", "load_space", "parse_space"]

GRID_LIMIT = 10_000  # candidates `sampler: grid` enumerates without --force
SCALAR = Union[bool, int, float, str, None]  # noqa: UP007  (pydantic reads it at run time on Python 3.10)


class SpaceError(AttnsearchError):
    """A space file that cannot be used; the message is one line starting with the YAML path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Range(_Section):
    """``{low, high, log}``: a number drawn from an interval."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def _nonempty(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1)]


PositiveInt = Annotated[int, Field(ge=1)]
UnitFloat = Annotated[float, Field(ge=0, lt=1)]
Head = Literal["compact", "classic"]


class BackboneSection(_Section):
    name: str | _nonempty(str) = "vgg16_bn"
    width: Annotated[float, Field(gt=0, le=4)] | _nonempty(Annotated[float, Field(gt=0, le=4)]) = 1.0
    head: Head | _nonempty(Head) = "compact"
    pretrained: bool = False


class DataSection(_Section):
    dataset: Literal["shapes", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder"] = "shapes"
    root: str | None = None
    val_root: str | None = None
    image_size: Annotated[int, Field(ge=8, le=1024)] = 32
    train_size: PositiveInt | None = None
    val_size: PositiveInt | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    download: bool = False
    seed: int = 0


Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "onecycle"]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class TrainSection(_Section):
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 3
    steps: PositiveInt | None = None
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | _nonempty(Annotated[int, Field(ge=1, le=65_536)]) = 128
    optimizer: Optimizer | _nonempty(Optimizer) = "sgd"
    lr: PositiveFloat | Range | _nonempty(PositiveFloat) = 0.05
    weight_decay: NonNegFloat | Range | _nonempty(NonNegFloat) = 5e-4
    label_smoothing: UnitFloat | _nonempty(UnitFloat) = 0.1
    augment: list[Literal["crop", "flip"]] = Field(default_factory=lambda: ["crop", "flip"])
    schedule: Schedule | _nonempty(Schedule) = "cosine"
    warmup_epochs: NonNegFloat = 0.5
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    epoch_val_size: PositiveInt | None = None  # validation images scored after each epoch but the last
    # auto: validate only the epochs the pruner can act on, and the last; all: every epoch (learning curves)
    epoch_val: Literal["auto", "all"] = "auto"
    seed: int = 0


METRICS = ("val_acc", "val_top5", "val_loss", "train_loss", "params", "flops", "latency_ms", "train_seconds")


class Objective(_Section):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"]


class Constraints(_Section):
    max_params: PositiveFloat | None = None
    max_flops: PositiveFloat | None = None
    max_latency_ms: PositiveFloat | None = None


class SearchSection(_Section):
    sampler: Literal["tpe", "random", "grid", "nsga2", "ablation"] = "tpe"
    n_trials: Annotated[int, Field(ge=1, le=1_000_000)] = 24
    timeout: PositiveFloat | None = None
    pruner: Literal["median", "hyperband", "none"] = "median"
    objectives: Annotated[list[Objective], Field(min_length=1)] = Field(
        default_factory=lambda: [Objective(metric="val_acc", direction="maximize")]
    )
    constraints: Constraints = Field(default_factory=Constraints)
    repeats: Annotated[int, Field(ge=1, le=100)] = 1
    seed: int | None = None  # the sampler's seed; None: the train seed


class ExecutionSection(_Section):
    executor: Literal["local", "ray"] = "local"
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    address: str | None = None
    gpus_per_trial: NonNegFloat = 0.0
    cpus_per_trial: PositiveFloat = 1.0
    max_concurrent: PositiveInt | None = None
    threads: PositiveInt | None = None  # torch threads per trial; None: all cores (local) or the CPU share (ray)


class SpaceFile(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    backbone: BackboneSection = Field(default_factory=BackboneSection)
    slots: dict[str, _nonempty(str)]
    modules: dict[str, dict[str, SCALAR | _nonempty(SCALAR)]] = Field(default_factory=dict)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    search: SearchSection = Field(default_factory=SearchSection)
    execution: ExecutionSection = Field(default_factory=ExecutionSection)


# ---------------------------------------------------------------------------------------------- error messages


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _submodels(arg)]


def _check_unknown_keys(model: type[BaseModel], data: Any, path: str) -> None:
    """Unknown keys first, with the valid ones listed (pydantic alone would only say 'extra inputs')."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in model.model_fields:
            raise SpaceError(f"{where}: unknown key; valid: {', '.join(model.model_fields)}")
        submodels = _submodels(model.model_fields[key].annotation)
        if len(submodels) != 1:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check_unknown_keys(submodels[0], item, f"{where}[{i}]")
        else:
            _check_unknown_keys(submodels[0], value, where)


def _yaml_path(loc: tuple[Any, ...], data: Any, *, last_is_key: bool) -> str:
    """Pydantic's error location, keeping only the parts that index the user's data (not union branch names)."""
    parts: list[str] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            parts.append(str(part))
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            parts.append(f"[{part}]")
            current = current[part]
        elif last_is_key and i == len(loc) - 1:
            parts.append(str(part))  # a missing key
    return ".".join(parts).replace(".[", "[") or "(top level)"


_PATTERN_MESSAGES = {
    "name": "must be a folder name: letters, digits, '.', '_' or '-', at most 100 characters",
    "device": "must be auto, cpu, cuda or cuda:N",
}


def _describe_error(err: ValidationError, data: Any) -> str:
    errors = err.errors()
    # In a union (e.g. `lr`: number | range | list) every branch fails; a failure inside a branch (a missing
    # `high`, low above high) says more than "is not a number", and the deepest one is what the user meant.
    informative = [e for e in errors if not e["type"].endswith("_type")] or errors
    first = max(informative, key=lambda e: len(e["loc"]))
    kind, message = first["type"], first["msg"]
    path = _yaml_path(first["loc"], data, last_is_key=kind in ("missing", "extra_forbidden"))
    if kind == "missing":
        message = "required key is missing"
    elif kind == "too_short":
        message = "must not be empty"
    elif kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(path.rsplit(".", 1)[-1], message)
    else:
        message = message.replace("Input should be", "must be").replace("Value error, ", "")
        if kind.endswith("_type") and not isinstance(first["input"], (dict, list)):
            message += f", got {first['input']!r}"
    return f"{path}: {message}"


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

    # -- the parameters Optuna sees ------------------------------------------------------------------------------

    def _categoricals(self) -> dict[str, list[Any]]:
        """Searched non-slot parameters with their choices (ranges excluded)."""
        b, t = self.config.backbone, self.config.train
        found = {
            "backbone": _as_list(b.name),
            "width": _as_list(b.width),
            "head": _as_list(b.head),
            "batch_size": _as_list(t.batch_size),
            "optimizer": _as_list(t.optimizer),
            "lr": [] if isinstance(t.lr, Range) else _as_list(t.lr),
            "weight_decay": [] if isinstance(t.weight_decay, Range) else _as_list(t.weight_decay),
            "label_smoothing": _as_list(t.label_smoothing),
            "schedule": _as_list(t.schedule),
        }
        return {k: v for k, v in found.items() if len(v) > 1}

    def _ranges(self) -> dict[str, Range]:
        t = self.config.train
        return {k: v for k, v in (("lr", t.lr), ("weight_decay", t.weight_decay)) if isinstance(v, Range)}

    def suggest(self, trial: Any, *, seed_offset: int = 0) -> Candidate:
        """Draw a Candidate through ``trial`` (an ``optuna.Trial``, or anything with its ``suggest_*`` methods)."""
        b, t = self.config.backbone, self.config.train
        categoricals, ranges = self._categoricals(), self._ranges()

        def pick(name: str, value: Any) -> Any:
            if name in ranges:
                r = ranges[name]
                return trial.suggest_float(name, r.low, r.high, log=r.log)
            if name in categoricals:
                return trial.suggest_categorical(name, categoricals[name])
            return _as_list(value)[0]

        backbone = pick("backbone", b.name)
        placements = []
        for slot, choices in self.slots[backbone].items():
            module = trial.suggest_categorical(slot, choices) if len(choices) > 1 else choices[0]
            if module == "none":
                continue
            params = []
            for param, values in self.module_params.get(module, {}).items():
                value = trial.suggest_categorical(f"{slot}.{module}.{param}", values) if len(values) > 1 else values[0]
                params.append((param, value))
            placements.append(PlacementSpec(slot, module, tuple(sorted(params))))
        recipe = TrainRecipe(
            epochs=t.epochs,
            steps=t.steps,
            batch_size=pick("batch_size", t.batch_size),
            optimizer=pick("optimizer", t.optimizer),
            lr=float(pick("lr", t.lr)),
            weight_decay=float(pick("weight_decay", t.weight_decay)),
            label_smoothing=float(pick("label_smoothing", t.label_smoothing)),
            augment=tuple(t.augment),
            schedule=pick("schedule", t.schedule),
            warmup_epochs=t.warmup_epochs,
            precision=t.precision,
            channels_last=t.channels_last,
            epoch_val_size=t.epoch_val_size,
            first_val_epoch=self.first_val_epoch,
        )
        return Candidate(
            backbone=BackboneSpec(backbone, float(pick("width", b.width)), pick("head", b.head), b.pretrained),
            placements=tuple(placements),
            train=recipe,
            data=self.data_spec(),
            seed=t.seed + seed_offset,
        )

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
        raise SpaceError(_describe_error(err, data)) from None
    from .attention import check_params, list_modules  # torch: only once the file itself is sound
    from .backbones import describe_names, list_backbones
    from .model import list_slots

    backbones = _as_list(config.backbone.name)
    for i, name in enumerate(backbones):
        if name not in list_backbones():
            where = "backbone.name" + (f"[{i}]" if isinstance(config.backbone.name, list) else "")
            raise SpaceError(f"{where}: unknown backbone {name!r}; valid: {', '.join(list_backbones())}")
    if config.backbone.pretrained:
        for name in backbones:
            from .backbones import backbone_info, pretrained_path

            try:
                pretrained_path(backbone_info(name))
            except ValueError as err:
                raise SpaceError(f"backbone.pretrained: {err}") from None

    modules = list_modules()
    for slot, choices in config.slots.items():
        for i, key in enumerate(choices):
            if key not in modules:
                raise SpaceError(f"slots.{slot}[{i}]: unknown attention module {key!r}; valid: {', '.join(modules)}")
        if len(set(choices)) != len(choices):
            raise SpaceError(f"slots.{slot}: a module is listed twice")

    slots: dict[str, dict[str, list[str]]] = {}
    image_size = config.data.image_size
    for name in backbones:
        per_backbone: dict[str, list[str]] = {}
        for width in _as_list(config.backbone.width):  # the same slots at every width; each must fit the images
            try:
                available = list_slots(name, image_size=image_size, width=width)
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
            raise SpaceError(f"modules.{key}: unknown attention module; valid: {valid}")
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

    search = config.search
    if len(search.objectives) > 1 and search.pruner != "none":
        raise SpaceError("search.pruner: pruning needs a single objective; set pruner: none for a Pareto search")
    metrics = [o.metric for o in search.objectives]
    if len(set(metrics)) != len(metrics):
        raise SpaceError("search.objectives: a metric is listed twice")
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
