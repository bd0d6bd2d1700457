"""Plug-in attention modules in an exported file (see :mod:`attnsearch.codegen`): embedded, or copied beside it.

A plug-in's module has no template: its code is the user's own file, taken verbatim from the source the plug-in
was loaded from (never text from a space or results file). That file is checked with :mod:`ast`:

- **embedded** when every import in it is of the standard library (``sys.stdlib_module_names``) or torch, apart
  from top-level ``import attnsearch`` / ``from attnsearch import register_module`` (or ``register_backbone``,
  ``register_dataset``) statements; its source then becomes a section of the exported file with exactly those
  lines left out: the attnsearch imports and the decorators that use them (each on lines of its own). Nothing
  else of attnsearch may be used, no name the exported file defines may be redefined (an import binding the same
  object, such as ``from torch import nn``, is fine), and ``from __future__`` imports move to the file's top. Two
  embedded files that define one name are refused (one line: rename one);
- **copied** otherwise (a relative import, a package outside torch and the standard library, attnsearch used
  beyond its registration decorators): the file is written beside the exported one under its own name, and the
  exported file loads it from there with ``attnsearch`` bound to no-op registration decorators
  (``templates/plugin_loader.py.tmpl``), so that it runs where attnsearch is not installed.

Either way the class the plug-in registered must be defined at the top level of its file; the exported code calls
it as attnsearch did, ``Class(channels, **params)`` with the candidate's checked values.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import keyword
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AttnsearchError

if TYPE_CHECKING:
    from .candidate import Candidate

__all__ = ["PluginCode", "plugin_class", "plugin_code", "plugin_factory", "plugin_files"]

_API = frozenset({"register_module", "register_backbone", "register_dataset"})
_ALLOWED = frozenset({*sys.stdlib_module_names, "torch"}) - {"__future__"}
# what the exported file binds by its imports: a plug-in may bind the same names to the same objects
_FILE_IMPORTS = {
    "torch": "torch",
    "F": "torch.nn.functional",
    "nn": "torch.nn",
    "Tensor": "torch.Tensor",
    "math": "math",
    "OrderedDict": "collections.OrderedDict",
    "Callable": "collections.abc.Callable",
    "builtins": "builtins",
    "importlib": "importlib",
    "os": "os",
    "types": "types",
}
_LOADER_NAMES = frozenset({"_registration", "_ATTNSEARCH", "_import", "_load_plugin", "IMAGE_SIZE", "NUM_CLASSES"})
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.py")
_LOADER_IMPORTS = ("import builtins", "import importlib.util", "import os", "import types")


@dataclass(frozen=True)
class PluginCode:
    """What the plug-in modules of a candidate add to its exported file."""

    sections: list[str] = field(default_factory=list)  # code before the attention templates
    future: list[str] = field(default_factory=list)  # ``from __future__`` lines, first of all imports
    imports: list[str] = field(default_factory=list)  # standard library import lines (the copied files' loader)
    needs: frozenset[str] = frozenset()  # names of codegen's import table the sections use
    files: dict[str, bytes] = field(default_factory=dict)  # copied: file name beside the export -> its bytes
    described: str = ""  # copied: what the file needs, for its docstring ("" when only PyTorch)


@dataclass(frozen=True)
class _Source:
    name: str  # the plug-in's import name
    file: Path
    data: bytes
    defined: frozenset[str]  # classes and functions defined at its top level
    why: str  # why it is copied; "" when embedded
    kept: str  # embedded: the source less its attnsearch lines
    future: tuple[str, ...]  # its ``from __future__`` lines
    bindings: tuple[tuple[str, str | None], ...]  # top-level names kept: (name, import target or None)


def plugin_class(key: str) -> str:
    """The expression that names plug-in module ``key``'s class in the exported file: ``MyAttention`` when its
    source is embedded, ``_plugin_my_attention.MyAttention`` when its file is copied; an AttnsearchError (one line) when
    ``key`` is no loaded plug-in's module or its class cannot be written.

    Example:
        >>> plugin_class("no_such_module")
        Traceback (most recent call last):
        attnsearch.errors.AttnsearchError: export: no code template for attention module 'no_such_module'
    """
    source, cls = _plugin_source(key)
    return cls if not source.why else f"{_alias(source)}.{cls}"


def plugin_factory(key: str) -> str:
    """The expression that names plug-in backbone ``key``'s factory in the exported file (as :func:`plugin_class`
    names a module's class)."""
    from .backbones.plugin import PLUGIN_BACKBONES

    source = _source_of("backbone", key)
    factory = PLUGIN_BACKBONES[key].factory
    name = getattr(factory, "__name__", "")
    if getattr(factory, "__qualname__", "") != name or name not in source.defined:
        raise AttnsearchError(
            f"export: backbone {key}'s factory is not a function defined at the top level of {source.file}: it "
            "cannot be written"
        )
    return name if not source.why else f"{_alias(source)}.{name}"


def plugin_code(keys: list[str], backbone: str | None = None) -> PluginCode:
    """The sections, imports and copied files for the plug-in module keys ``keys`` (each a loaded plug-in's) and
    the plug-in backbone ``backbone``; an AttnsearchError (one line) as :func:`plugin_class`, or for two copied
    files of one name.

    Example:
        >>> plugin_code([]) == PluginCode()
        True
    """
    found = [_plugin_source(key)[0] for key in keys] + ([_source_of("backbone", backbone)] if backbone else [])
    sources = list({s.file: s for s in found}.values())
    if not sources:
        return PluginCode()
    _check_apart([s for s in sources if not s.why])
    sections, future, files = [], [], {}
    for source in sources:
        if source.why:
            name = source.file.name
            if name in files:
                raise AttnsearchError(f"export: two plug-in files are named {name}: rename one of them")
            files[name] = source.data
        else:
            digest = hashlib.sha256(source.data).hexdigest()[:16]
            sections.append(
                f"# plug-in {_comment(source.file.name)} (sha256 {digest}...): its source, verbatim but for its "
                f"attnsearch imports and decorators\n{source.kept}"
            )
            future += [line for line in source.future if line not in future]
    copied = [s for s in sources if s.why]
    if copied:
        loader = resources.files("attnsearch").joinpath("templates", "plugin_loader.py.tmpl").read_text("utf-8")
        calls = "\n".join(f'{_alias(s)} = _load_plugin("{_file_name(s.file.name)}")' for s in copied)
        sections.insert(0, f"{loader.rstrip()}\n\n\n{calls}")
    return PluginCode(
        sections=sections,
        future=future,
        imports=list(_LOADER_IMPORTS) if copied else [],
        described=_described(list(files)),
        needs=frozenset({"Callable"}) if copied else frozenset(),
        files=files,
    )


def plugin_files(candidate: Candidate) -> dict[str, bytes] | None:
    """The plug-in files the exported code of ``candidate`` loads from beside it (file name -> bytes; {} when it
    embeds every plug-in's source); None when the candidate uses no plug-in module or backbone.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> print(plugin_files(Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "se"),))))
        None
    """
    from .plugins import plugin_of

    keys = [key for key in dict.fromkeys(p.module for p in candidate.placements) if plugin_of("module", key)]
    backbone = candidate.backbone.name if plugin_of("backbone", candidate.backbone.name) else None
    return plugin_code(keys, backbone).files if keys or backbone else None


# ------------------------------------------------------------------------------------------------ reading the file


def _plugin_source(key: str) -> tuple[_Source, str]:
    from .attention import module_info

    source = _source_of("module", key)
    cls = module_info(key).cls
    if cls.__qualname__ != cls.__name__ or cls.__name__ not in source.defined:
        raise AttnsearchError(
            f"export: {key}'s class {cls.__qualname__} is not defined at the top level of {source.file}: it cannot "
            "be written"
        )
    return source, cls.__name__


def _source_of(kind: str, key: str) -> _Source:
    from .plugins import plugin_of

    plugin = plugin_of(kind, key)
    if plugin is None:
        what = "attention module" if kind == "module" else kind
        raise AttnsearchError(f"export: no code template for {what} {key!r}")
    path = Path(plugin.file)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AttnsearchError(f"export: plug-in {plugin.name}: cannot read {path} ({err.strerror or err})") from None
    if hashlib.sha256(data).hexdigest() != plugin.sha256:
        raise AttnsearchError(f"export: plug-in {plugin.name}: {path} changed since it was loaded; export again")
    return _analyse(plugin.name, str(path), data)


@functools.lru_cache(maxsize=32)
def _analyse(name: str, file: str, data: bytes) -> _Source:
    try:
        text = data.decode("utf-8")
        tree = ast.parse(text, filename=file)
    except (UnicodeDecodeError, SyntaxError, ValueError) as err:
        raise AttnsearchError(f"export: plug-in {name}: {file} is not readable Python ({err})") from None
    lines = text.splitlines(keepends=True)
    defined = frozenset(n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)))
    why, dropped, bound, future = _imports(tree, lines)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if any(isinstance(n, ast.Name) and n.id in bound for n in ast.walk(decorator)):
                    why = why or _drop(decorator, lines, dropped, prefix="@")
    used = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in bound and n.lineno not in dropped]
    if used and not why:
        why = f"it uses attnsearch beyond its registration decorators (line {used[0].lineno})"
    bindings = _bindings(tree, dropped)
    why = why or _clash(bindings)
    kept = _kept(lines, dropped)
    pairs = tuple((name, target) for name, target, _ in bindings)
    return _Source(name, Path(file), data, defined, why, kept if not why else "", tuple(future), pairs)


def _kept(lines: list[str], dropped: set[int]) -> str:
    """The lines not dropped; blank lines next to a dropped one (between statements, never inside a string) are
    kept up to two in a row, so that no gap grows."""
    kept: list[str] = []
    near_drop, blanks = False, 0
    for i, line in enumerate(lines, 1):
        if i in dropped:
            near_drop = True
            continue
        if line.strip():
            near_drop, blanks = False, 0
        elif near_drop and blanks >= 2:
            continue
        else:
            blanks += 1
        kept.append(line)
    return "".join(kept).strip("\n") + "\n"


def _imports(tree: ast.Module, lines: list[str]) -> tuple[str, set[int], set[str], list[str]]:
    """Why the file cannot be embedded ("" when it can), the lines to leave out, the names bound to attnsearch's
    registration, and the ``from __future__`` lines."""
    why, dropped, bound, future = "", set(), set(), []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            top = module.partition(".")[0]
            if node.level:
                why = why or f"it has a relative import (line {node.lineno})"
            elif top == "__future__" and id(node) in top_level:
                why = why or _drop(node, lines, dropped)
                future.append(ast.get_source_segment("".join(lines), node) or "")
            elif top == "attnsearch" and module == top and id(node) in top_level and _api_only(node):
                why = why or _drop(node, lines, dropped)
                bound |= {alias.asname or alias.name for alias in node.names}
            elif top not in _ALLOWED:
                why = why or f"it imports {module} (line {node.lineno})"
            elif any(alias.name == "*" for alias in node.names):
                why = why or f"it has a star import (line {node.lineno})"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                if top == "attnsearch" and alias.name == top and id(node) in top_level and len(node.names) == 1:
                    why = why or _drop(node, lines, dropped)
                    bound.add(alias.asname or top)
                elif top not in _ALLOWED:
                    why = why or f"it imports {alias.name} (line {node.lineno})"
    return why, dropped, bound, future


def _api_only(node: ast.ImportFrom) -> bool:
    return all(alias.name in _API for alias in node.names)


def _drop(node: ast.AST, lines: list[str], dropped: set[int], *, prefix: str = "") -> str:
    """Leave out the lines of ``node`` when it is alone on them; else the reason the file is copied instead."""
    first, last = node.lineno, node.end_lineno or node.lineno
    before = lines[first - 1][: node.col_offset].strip()
    after = lines[last - 1][node.end_col_offset :].strip()
    if before != prefix or (after and not after.startswith("#")):
        return f"line {first} holds more than attnsearch's import or decorator"
    dropped.update(range(first, last + 1))
    return ""


@functools.cache
def _reserved() -> frozenset[str]:
    """The top-level names an exported file may define (its templates', the loader's)."""
    found = set(_LOADER_NAMES)
    for item in resources.files("attnsearch").joinpath("templates").iterdir():
        if item.name.endswith(".py.tmpl"):
            text = item.read_text("utf-8")
            found |= {m.group(1) or m.group(2) for m in re.finditer(r"^(?:class|def) (\w+)|^(\w+) =", text, re.M)}
    return frozenset(found)


def _bindings(tree: ast.Module, dropped: set[int]) -> list[tuple[str, str | None, int]]:
    """The names the file's kept top-level statements bind: (name, what an import binds it to, or None for a
    definition or an assignment, line)."""
    found: list[tuple[str, str | None, int]] = []
    for node in tree.body:
        if node.lineno in dropped:
            continue
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node.name, None, node.lineno))
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [(n.id, None, node.lineno) for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                found.append((bound, alias.name if alias.asname else bound, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            found += [(a.asname or a.name, f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def _clash(bindings: list[tuple[str, str | None, int]]) -> str:
    """Why a top-level name of the plug-in would clash with the exported file's ("" when none does)."""
    for name, target, line in bindings:
        if name in _FILE_IMPORTS and target == _FILE_IMPORTS[name]:
            continue
        if name in _FILE_IMPORTS or name in _reserved() or re.fullmatch(r"_\w+_attn", name):
            return f"its top-level name {name} is one the exported file defines (line {line})"
    return ""


def _check_apart(sources: list[_Source]) -> None:
    """Embedded sources share the exported file's namespace: no two may bind one name to different things."""
    seen: dict[str, tuple[str | None, Path]] = {}
    for source in sources:
        for name, target in source.bindings:
            if name in seen and (target is None or seen[name][0] != target):
                raise AttnsearchError(
                    f"export: plug-ins {seen[name][1].name} and {source.file.name} both define {name} at their top "
                    "level, which one exported file cannot hold: rename one of them"
                )
            seen[name] = (target, source.file)


# ------------------------------------------------------------------------------------------------ names in the code


def _alias(source: _Source) -> str:
    """The variable that holds a copied plug-in module: ``_plugin_`` and its file's stem."""
    stem = source.file.name[:-3] if source.file.name.endswith(".py") else ""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stem) or keyword.iskeyword(stem):
        raise AttnsearchError(f"export: plug-in file {source.file.name!r:.60} is not named like a Python module")
    return f"_plugin_{stem}"


def _file_name(name: str) -> str:
    if not _FILE_NAME.fullmatch(name):
        raise AttnsearchError(f"export: plug-in file {name!r:.60} cannot be named in the exported code")
    return name


def _described(names: list[str]) -> str:
    """The exported file's needs, in its docstring, when it loads plug-in files from beside it."""
    if not names:
        return ""
    listed = ", ".join(_file_name(name) for name in names)
    return f"it needs PyTorch and the plug-in file{'s' if len(names) > 1 else ''} {listed} beside it, which it loads"


def _comment(name: str) -> str:
    return name if _FILE_NAME.fullmatch(name) else "its file"
