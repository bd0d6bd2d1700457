"""Reading a YAML file safely: a safe loader, no aliases, no duplicate keys, a size cap, errors with line and column."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "YamlError", "read_yaml"]

MAX_BYTES = 1_000_000  # a search space is a page of text; anything far larger is a mistake or an attack


class YamlError(ValueError):
    """A file that is not acceptable YAML; the message is one line naming the file and, where known, the place."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no billion laughs) and duplicate keys (no silent overwrite)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in a space file", problem_mark=mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 5.0e6 and 1e-4 as strings; a space file means numbers, as YAML 1.2 does.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse ``path`` with a safe loader; any problem is a :class:`YamlError` with line and column."""
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
        if size > MAX_BYTES:
            raise YamlError(f"{name}: file is {size:,} bytes; a space file may have at most {MAX_BYTES:,}")
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise YamlError(f"{name}: cannot read: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise YamlError(f"{name}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
        if "'\\t'" in problem:
            problem = "a tab character: indent with spaces, not tabs"
        raise YamlError(f"{name}: {where}{problem}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"{name}: {' '.join(str(err).split())}") from None
