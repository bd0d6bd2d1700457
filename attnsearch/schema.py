"""One definition per schema: frozen dataclasses, checked from JSON, and the space file's sections derived from them.

The dataclasses of :mod:`attnsearch.candidate`, :mod:`attnsearch.record` and
:mod:`attnsearch.search.settings` are the only statement of their fields: the type of each (``Literal`` choices
included), its default, and its limits as pydantic ``Field`` metadata inside ``Annotated``. From them:

- :func:`from_json` reads one back from JSON-like data (a ``trial.json``) with every key and type checked, in
  pydantic's strict JSON mode: an unknown key, a string where a number belongs ("3" for ``epochs``) or a value out
  of range is one :class:`~attnsearch.errors.AttnsearchError` line naming the key;
- :func:`section_model` makes the pydantic model of a space-file section, where a field marked :data:`CHOICES`
  may also be a list of values to search and one marked :data:`RANGE` also a ``{low, high, log}`` interval;
- :func:`plain` writes any of them as standard JSON values (tuples as lists, NaN and infinities as null).

Errors from either path are worded by :func:`describe_error`, so a space file and a trial record say the same
thing the same way: ``train.epochs: must be greater than or equal to 1``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator

from .errors import AttnsearchError

__all__ = [
    "CHOICES",
    "RANGE",
    "STRICT",
    "Range",
    "Section",
    "describe_error",
    "from_json",
    "plain",
    "section_model",
]

STRICT = ConfigDict(extra="forbid", strict=True)  # the config of every checked dataclass and space section
CHOICES = {"searched": "choices"}  # field metadata: a space file may give a list of values to search over
RANGE = {"searched": "range"}  # ... or, for a number, a {low, high, log} interval


class Section(BaseModel):
    """A space-file section: unknown keys refused, no silent conversion (``"3"`` is not an integer)."""

    model_config = STRICT


class Range(Section):
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


# ------------------------------------------------------------------------------------------------ reading


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def from_json(cls: type, data: Any, root: str = "", *, file: str | None = None) -> Any:
    """An instance of the dataclass ``cls`` from JSON-like ``data``; an AttnsearchError naming the key (under the
    key path ``root``, in ``file`` when given) otherwise.

    Example:
        >>> from attnsearch.candidate import TrainRecipe
        >>> from_json(TrainRecipe, {"epochs": 2, "augment": ["flip"]}, "train").augment
        ('flip',)
        >>> from_json(TrainRecipe, {"epochs": "3"}, "candidate.train", file="trials/0/trial.json")
        Traceback (most recent call last):
        ...
        attnsearch.errors.AttnsearchError: trials/0/trial.json: candidate.train.epochs: must be a valid integer, got "3"
    """
    where = f"{file}: " if file else ""
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise AttnsearchError(f"{where}{root or cls.__name__}: not JSON data ({err})") from None
    try:
        return _adapter(cls).validate_json(text)
    except ValidationError as err:
        detail = describe_error(err, data, as_json=True)
        raise AttnsearchError(f"{where}{root}{'.' if root else ''}{detail}") from None


def plain(value: Any) -> Any:
    """``value`` as standard JSON values: dataclasses as dicts, tuples as lists, NaN and infinities as None.

    Example:
        >>> plain({"a": (1, float("nan")), "b": [float("inf")]})
        {'a': [1, None], 'b': [None]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return plain(to_dict() if to_dict is not None else dataclasses.asdict(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        return plain(value.item())
    return value


# ------------------------------------------------------------------------------------------------ space sections


def section_model(
    cls: type, name: str, *, extra: Mapping[str, tuple[Any, Any]] | None = None, skip: tuple[str, ...] = ()
) -> type[Section]:
    """The pydantic model of the space-file section that describes dataclass ``cls``.

    Each field keeps its type, limits and default; a field with :data:`CHOICES` metadata may also be a non-empty
    list of such values, one with :data:`RANGE` also a :class:`Range` or a list; a tuple is written as a list.
    ``extra`` adds section-only fields (name -> (annotation, default)); ``skip`` leaves fields out.

    Example:
        >>> from attnsearch.candidate import BackboneSpec
        >>> Backbone = section_model(BackboneSpec, "BackboneSection")
        >>> Backbone.model_validate({"name": ["vgg11", "vgg16"], "width": 0.5}).name
        ['vgg11', 'vgg16']
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    definitions: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        annotation = _as_lists(hints[f.name])
        searched = f.metadata.get("searched")
        if searched == "choices":
            annotation = annotation | Annotated[list[annotation], Field(min_length=1)]
        elif searched == "range":
            annotation = annotation | Range | Annotated[list[annotation], Field(min_length=1)]
        default = f.default
        if default is dataclasses.MISSING:
            definitions[f.name] = (annotation, ...)
        elif isinstance(default, tuple):
            definitions[f.name] = (annotation, Field(default_factory=functools.partial(list, default)))
        else:
            definitions[f.name] = (annotation, default)
    definitions.update(extra or {})
    return create_model(name, __base__=Section, __module__=cls.__module__, **definitions)


def _as_lists(annotation: Any) -> Any:
    """A tuple annotation as the list a YAML file holds (``tuple[X, ...]`` -> ``list[X]``), elsewhere unchanged."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[args[0]]
    return annotation


# ------------------------------------------------------------------------------------------------ error messages


_PATTERN_MESSAGES = {
    "name": "must be a folder name: letters, digits, '.', '_' or '-', at most 100 characters",
    "device": "must be auto, cpu, cuda or cuda:N",
}
# what a value of a field with a list of values is called in "unknown <noun> 'x'": the key, unless named here
_CHOICE_NOUNS = {"augment": "augmentation", "epoch_val": "epoch_val setting"}


def describe_error(err: ValidationError, data: Any, *, as_json: bool = False) -> str:
    """Pydantic's first meaningful error as one line: ``path.to.key: what is wrong``; ``as_json`` writes the
    offending value as JSON (a record), else as Python writes it (a space file).

    In a union (``lr``: a number, a range or a list) every branch fails; a failure inside a branch (a missing
    ``high``, low above high) says more than "is not a number", and the deepest one is what the user meant. A value
    outside a field's list of values (a ``Literal``) is repeated with the valid ones, as unknown modules and
    backbones are: ``data.dataset: unknown dataset 'imagenet22k'; valid: shapes, digits, ...``.
    """
    errors = err.errors()
    informative = [e for e in errors if not e["type"].endswith("_type")] or errors
    first = max(informative, key=lambda e: len(e["loc"]))
    kind, message = first["type"], first["msg"]
    path = _yaml_path(first["loc"], data, last_is_key=kind in ("missing", "extra_forbidden", "missing_argument"))
    if kind in ("missing", "missing_argument"):
        message = "required key is missing"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key"
    elif kind == "too_short":
        message = "must not be empty"
    elif kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(path.rsplit(".", 1)[-1], message)
    elif kind == "literal_error":
        message = _choice_message(path, first, as_json)
    else:
        message = message.replace("Input should be", "must be").replace("Value error, ", "")
        if kind.endswith("_type") and not isinstance(first["input"], (dict, list)):
            message += f", got {json.dumps(first['input']) if as_json else repr(first['input'])}"
    return f"{path}: {message}"


def _choice_message(path: str, error: Any, as_json: bool) -> str:
    """A value outside a Literal's values: ``unknown <noun> 'x'; valid: a, b`` (``must be one of a, b, got 3`` for
    a value that is not even a string). The values are pydantic's, from its error's ``expected``."""
    choices = ", ".join(re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", ""))))
    value = error["input"]
    written = json.dumps(value) if as_json else repr(value)
    if not isinstance(value, str):
        shown = f"a {type(value).__name__}" if isinstance(value, (dict, list)) else written
        return f"must be one of {choices}, got {shown}"
    key = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
    return f"unknown {_CHOICE_NOUNS.get(key, key.replace('_', ' '))} {written}; valid: {choices}"


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
