"""Plug-ins: attention modules, backbones and datasets of the user's own, in the registries the built-ins use.

They come from two places only: ``--plugin PATH_OR_MODULE`` on the command line (or :func:`load_plugins` from a
script), and installed packages that declare entry points in the groups ``attnsearch.modules``,
``attnsearch.backbones`` and ``attnsearch.datasets``. A space file never imports anything: a key it names that no
loaded plug-in provides is refused with the ``--plugin`` that is missing.

A plug-in file is imported under a stable name, ``attnsearch_plugin_<stem>`` (its file name, letters and digits
kept), registered in ``sys.modules`` so that its classes pickle (Ray workers load the same file first). Loading a
file or module again is a no-op. What it registers goes through ``attnsearch.register_module``,
``register_backbone`` and ``register_dataset``; each attention module it registers is checked at once against the
contract every module keeps (:mod:`attnsearch.plugin_checks`), as is each backbone's list of slots. Every problem
is one :class:`~attnsearch.errors.AttnsearchError` line naming the plug-in, never a traceback.

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "doc_gate.py").write_text(
    ...     "import torch, attnsearch\\n"
    ...     "@attnsearch.register_module('doc_gate', paper='-')\\n"
    ...     "class DocGate(torch.nn.Module):\\n"
    ...     "    def __init__(self, channels, *, scale: float = 1.0):\\n"
    ...     "        super().__init__()\\n"
    ...     "        self.w = torch.nn.Parameter(torch.ones(channels, 1, 1) * scale)\\n"
    ...     "    def forward(self, x):\\n"
    ...     "        return x * torch.sigmoid(self.w)\\n")
    >>> [plugin] = load_plugins([str(folder / "doc_gate.py")])
    >>> plugin.name, plugin.origin, plugin.keys
    ('attnsearch_plugin_doc_gate', '--plugin', {'module': ('doc_gate',)})
    >>> plugin_of("module", "doc_gate") == plugin, plugin_of("module", "se")
    (True, None)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from .errors import AttnsearchError

__all__ = ["ENTRY_POINT_GROUPS", "KINDS", "Plugin", "load_plugins", "loaded_plugins", "plugin_of", "plugin_specs"]

KINDS = ("module", "backbone", "dataset")  # what a plug-in may register
ENTRY_POINT_GROUPS = {
    "attnsearch.modules": "module",
    "attnsearch.backbones": "backbone",
    "attnsearch.datasets": "dataset",
}
FILE_PREFIX = "attnsearch_plugin_"  # a plug-in file's import name: this and its file name's stem


@dataclass(frozen=True)
class Plugin:
    """One loaded plug-in and what it registered.

    ``spec`` loads it again in another process (``load_plugins([plugin.spec])``): the absolute file path of a
    ``--plugin`` file, the module name of a ``--plugin`` module; an entry point's is its module name too, and an
    entry point is found again by itself.
    """

    name: str  # import name in sys.modules, e.g. "attnsearch_plugin_my_gate" or "mypkg.gates"
    file: str  # absolute path of its source file
    sha256: str  # of the source file's bytes, at load
    origin: str  # "--plugin", or "entry point <distribution>"
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)  # kind -> keys it registered
    spec: str = ""  # what load_plugins takes to load it again

    def describe(self) -> str:
        """``my_gate.py (--plugin)``: what ``attnsearch modules`` shows in its origin column."""
        where = self.file if self.origin == "--plugin" and self.name.startswith(FILE_PREFIX) else self.name
        return f"{os.path.basename(where) if where == self.file else where} ({self.origin})"


_LOADED: dict[str, Plugin] = {}  # import name -> plug-in, in load order
_SPECS: list[str] = []  # what --plugin named, as load_plugins takes it again (files by absolute path)
_ENTRY_POINTS_LOADED = False


def load_plugins(specs: Sequence[str] = (), *, entry_points: bool = True) -> list[Plugin]:
    """Load the plug-ins ``specs`` names (each a ``.py`` file or an importable module name) and, unless
    ``entry_points`` is false, the installed entry points of :data:`ENTRY_POINT_GROUPS` (once per process).

    Returns the plug-ins loaded or already loaded for ``specs``, entry points first. Raises an AttnsearchError (one
    line naming the plug-in) for a file that does not exist, a module that cannot be imported, an import that
    fails, a key registered twice, a plug-in that registers nothing, or a module that breaks its contract.
    """
    found: list[Plugin] = []
    if entry_points:
        found.extend(_load_entry_points())
    for spec in specs:
        plugin = _load_spec(str(spec))
        if plugin not in found:
            found.append(plugin)
    return found


def loaded_plugins() -> list[Plugin]:
    """Every plug-in loaded in this process, in load order."""
    return list(_LOADED.values())


def plugin_of(kind: str, key: str) -> Plugin | None:
    """The loaded plug-in that registered ``key`` as a ``kind`` (module, backbone, dataset); None for a built-in."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    return next((p for p in _LOADED.values() if key in p.keys.get(kind, ())), None)


def plugin_specs() -> list[str]:
    """What ``--plugin`` loaded in this process, as :func:`load_plugins` takes it in another (a Ray worker)."""
    return list(_SPECS)


# -------------------------------------------------------------------------------------------------- loading


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec


def _load_spec(spec: str) -> Plugin:
    if _is_file(spec):
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise AttnsearchError(f"plug-in {spec}: no such file")
        name = FILE_PREFIX + (re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0]) or "_")
        if name in _LOADED:
            if _LOADED[name].file != path:
                raise AttnsearchError(
                    f"plug-in {spec}: {_LOADED[name].file} is loaded under the same name {name}; rename one file"
                )
            return _LOADED[name]
        plugin = _import(spec, name, lambda: _exec_file(name, path), "--plugin", path)
    else:
        if spec in _LOADED:
            return _LOADED[spec]
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", spec):
            raise AttnsearchError(f"plug-in {spec}: neither a .py file nor a module name")
        if spec == "attnsearch" or spec.startswith("attnsearch."):
            raise AttnsearchError(f"plug-in {spec}: part of attnsearch itself, not a plug-in")
        plugin = _import(spec, spec, lambda: importlib.import_module(spec), "--plugin", spec)
    _SPECS.append(plugin.spec)
    return plugin


def _exec_file(name: str, path: str) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before running it: its classes pickle by this name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_entry_points() -> list[Plugin]:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return [p for p in _LOADED.values() if p.origin.startswith("entry point")]
    _ENTRY_POINTS_LOADED = True
    found: list[Plugin] = []
    for group in ENTRY_POINT_GROUPS:
        for entry in importlib.metadata.entry_points(group=group):
            if entry.module in _LOADED:
                plugin = _LOADED[entry.module]
            else:
                dist = getattr(entry.dist, "name", None)
                origin = f"entry point {dist}" if dist else "entry point"
                plugin = _import(f"{entry.name} ({group})", entry.module, entry.load, origin, entry.module)
            if plugin not in found:
                found.append(plugin)
    return found


def _import(label: str, name: str, run: Callable[[], object], origin: str, spec: str) -> Plugin:
    """Import through ``run`` and build the Plugin from what the registries gained; undone on any failure."""
    from . import plugin_checks

    before = plugin_checks.registered()
    try:
        module = run()
    except AttnsearchError as err:
        _forget(plugin_checks, before, name)
        raise AttnsearchError(f"plug-in {label}: {err}") from None
    except ModuleNotFoundError as err:
        _forget(plugin_checks, before, name)
        what = "cannot be imported" if err.name == name else "import failed"
        hint = f" (the file? pass {name}.py)" if err.name == name and os.path.isfile(f"{name}.py") else ""
        raise AttnsearchError(f"plug-in {label}: {what}: {type(err).__name__}: {err}{hint}") from None
    except Exception as err:  # the plug-in's own code failed: its message, on one line
        _forget(plugin_checks, before, name)
        raise AttnsearchError(f"plug-in {label}: import failed: {type(err).__name__}: {_one_line(err)}") from None
    module = sys.modules.get(name, module if isinstance(module, ModuleType) else None)
    keys = plugin_checks.gained(before)
    if not any(keys.values()):
        keys = plugin_checks.owned_by(name)  # imported before (by another route): what its own code registered
    file = getattr(module, "__file__", None)
    if not file:
        _forget(plugin_checks, before, name)
        raise AttnsearchError(f"plug-in {label}: {name} has no source file")
    file = os.path.abspath(file)
    if not any(keys.values()):
        _forget(plugin_checks, before, name)
        raise AttnsearchError(
            f"plug-in {label}: registers nothing; decorate a class with @attnsearch.register_module "
            "(or a factory with register_backbone, a loader with register_dataset)"
        )
    plugin = Plugin(name, file, _sha256(file), origin, {k: v for k, v in keys.items() if v}, spec)
    try:
        plugin_checks.check_plugin(plugin)
    except AttnsearchError as err:
        _forget(plugin_checks, before, name)
        raise AttnsearchError(f"plug-in {label}: {err}") from None
    _LOADED[name] = plugin
    return plugin


def _forget(plugin_checks: ModuleType, before: dict[str, set[str]], name: str) -> None:
    plugin_checks.unregister(plugin_checks.gained(before))
    if name.startswith(FILE_PREFIX):
        sys.modules.pop(name, None)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
