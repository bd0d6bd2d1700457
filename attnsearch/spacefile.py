"""The space file's schema: one pydantic model per section, and the one-line error for a key it does not know.

The sections that describe a candidate (``backbone``, ``data``, ``train``) and the constraints are derived from
their dataclasses; ``search`` and ``execution`` are written here. pydantic checks types and limits; an unknown key
is answered first, with the valid keys listed. :mod:`attnsearch.space` turns a validated file into a
:class:`~attnsearch.space.SearchSpace`.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from .augment_params import check_augment_params
from .candidate import BackboneSpec, DataSpec, TrainRecipe
from .device import DEVICE_PATTERN
from .errors import AttnsearchError
from .record import METRICS
from .schema import Section, section_model
from .search.settings import Constraints

__all__ = [
    "BackboneSection",
    "ConfirmSection",
    "ConstraintsSection",
    "DataSection",
    "ExecutionSection",
    "Objective",
    "SearchSection",
    "SpaceError",
    "SpaceFile",
    "TrainSection",
]

SCALAR = Union[bool, int, float, str, None]  # noqa: UP007  (pydantic reads it at run time on Python 3.10)


class SpaceError(AttnsearchError):
    """A space file that cannot be used; the message is one line starting with the YAML path."""


_Section = Section


def _nonempty(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1)]


PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]

# The sections that describe a candidate and the constraints are derived from their dataclasses (the one definition
# of each field's type, limits and default); a field those mark as searched may also be a list (or a range) here.
BackboneSection = section_model(BackboneSpec, "BackboneSection")


class DataSection(section_model(DataSpec, "_DataFields")):  # type: ignore[misc]
    @field_validator("dataset", mode="before")
    @classmethod
    def _known_dataset(cls, value: Any) -> Any:
        """A built-in source or a loaded plug-in's dataset (the field is a plain string: plug-ins add names)."""
        from .dataset_registry import check_dataset_name

        check_dataset_name(value)
        return value


_TrainFields = section_model(
    TrainRecipe,
    "_TrainFields",
    extra={
        # auto: validate only the epochs the pruner can act on, and the last; all: every epoch (learning curves).
        # How trials are judged, not how they train: it goes to TrialSettings, never into the recipe.
        "epoch_val": (Literal["auto", "all"], "auto"),
        "seed": (int, 0),  # the candidates' seed (weights, batch order, augmentation)
    },
)


class TrainSection(_TrainFields):  # type: ignore[valid-type,misc]
    @model_validator(mode="after")
    def _params_of_listed_augments(self) -> TrainSection:
        """``augment_params`` only for augmentations that ``augment`` lists (a typo would silently do nothing)."""
        try:
            check_augment_params(self.augment_params, self.augment)
        except ValueError as err:
            raise ValueError(f"augment_params.{err}") from None
        return self


ConstraintsSection = section_model(Constraints, "ConstraintsSection")


class Objective(_Section):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"]


class ConfirmSection(_Section):
    """``search.confirm``: the confirmation race run after the search (:mod:`attnsearch.search.confirm`). The
    ``top`` best distinct candidates of the search and the baseline (nothing placed) are trained again with up to
    ``seeds`` fresh seeds shared across them; ``epochs`` and ``train_size`` (None: the search's) set its budget."""

    top: Annotated[int, Field(ge=1, le=100)] = 3  # distinct candidates of the search's ranking
    seeds: Annotated[int, Field(ge=2, le=100)] = 5  # seed rounds at most (two at least: one pair gives no interval)
    epochs: Annotated[int, Field(ge=1, le=10_000)] | None = None  # None: each candidate's own train.epochs
    train_size: PositiveInt | Literal["all"] | None = None  # None: the search's data.train_size; all: no cap


class SearchSection(_Section):
    sampler: Literal["tpe", "random", "grid", "nsga2", "ablation"] = "tpe"
    n_trials: Annotated[int, Field(ge=1, le=1_000_000)] = 24
    timeout: PositiveFloat | None = None
    pruner: Literal["median", "hyperband", "none"] = "median"
    objectives: Annotated[list[Objective], Field(min_length=1)] = Field(
        default_factory=lambda: [Objective(metric="val_acc", direction="maximize")]
    )
    constraints: ConstraintsSection = Field(default_factory=ConstraintsSection)  # type: ignore[valid-type]
    repeats: Annotated[int, Field(ge=1, le=100)] = 1
    seed: int | None = None  # the sampler's seed; None: the train seed
    confirm: ConfirmSection | None = None  # the confirmation race after the search; None (absent): none

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_switch(cls, value: Any) -> Any:
        """``confirm: true`` is the race with its defaults, ``confirm: false`` none."""
        return {} if value is True else None if value is False else value


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
    backbone: BackboneSection = Field(default_factory=BackboneSection)  # type: ignore[valid-type]
    slots: dict[str, _nonempty(str)]
    modules: dict[str, dict[str, SCALAR | _nonempty(SCALAR)]] = Field(default_factory=dict)
    data: DataSection = Field(default_factory=DataSection)  # type: ignore[valid-type]
    train: TrainSection = Field(default_factory=TrainSection)  # type: ignore[valid-type]
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
