"""Which plug-ins a trial used, and loading them again from its record: the plug-in side of replay and export.

A trial whose candidate uses a key a plug-in registered (:mod:`attnsearch.plugins`: a module in a placement, the
backbone, the dataset) records that plug-in in its ``trial.json``: import name, source file and the SHA-256 of
the source's bytes (:class:`~attnsearch.record.PluginRecord`). The store fills this in as it writes a record
(:func:`with_plugins`), so every record of a trial, confirmation or replay carries it; a record of built-ins alone
has no ``plugins`` key, as before.

``replay``, ``export`` and ``explain`` call :func:`load_recorded` before they build a model: a plug-in already
loaded (``--plugin``, an entry point) is used as it is; else it is loaded from the recorded file, or by its import
name when the file is gone and the module can be imported; else the command stops with one line naming the
plug-in and the file. A source whose SHA-256 differs from the recorded one is loaded all the same, with one warning
line. ``watch`` and ``report`` need no plug-in: they read records, never build models.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AttnsearchError
from .record import PluginRecord, TrialRecord

if TYPE_CHECKING:
    from .candidate import Candidate
    from .search.store import ResultsStore

__all__ = ["load_for_trials", "load_recorded", "missing_plugins", "used_plugins", "with_plugins"]


def _candidate_keys(candidate: Candidate) -> list[tuple[str, str]]:
    """(kind, key) of every registry key the candidate names, in a stable order."""
    keys = [("backbone", candidate.backbone.name), ("dataset", candidate.data.dataset)]
    keys += [("module", p.module) for p in candidate.placements]
    return list(dict.fromkeys(keys))


def used_plugins(candidate: Candidate | None) -> tuple[PluginRecord, ...]:
    """The loaded plug-ins whose keys ``candidate`` uses, one record per plug-in and kind; () for built-ins alone.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> used_plugins(Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "se"),)))
        ()
    """
    if candidate is None:
        return ()
    from .plugins import plugin_of

    found: dict[tuple[str, str, str], list[str]] = {}
    plugins = {}
    for kind, key in _candidate_keys(candidate):
        plugin = plugin_of(kind, key)
        if plugin is not None:
            found.setdefault((plugin.name, plugin.file, kind), []).append(key)
            plugins[plugin.name, plugin.file] = plugin
    return tuple(
        PluginRecord(name, file, plugins[name, file].sha256, kind, tuple(keys))  # type: ignore[arg-type]
        for (name, file, kind), keys in found.items()
    )


def with_plugins(record: TrialRecord) -> TrialRecord:
    """``record`` with the plug-ins its candidate uses, unless it names them already (a record read back)."""
    if record.plugins or record.candidate is None:
        return record
    used = used_plugins(record.candidate)
    return replace(record, plugins=used) if used else record


def missing_plugins(records: Iterable[TrialRecord]) -> list[str]:
    """The import names of the plug-ins ``records`` name whose keys no loaded plug-in provides.

    Example:
        >>> missing_plugins([TrialRecord(0, "complete")])
        []
    """
    from .plugins import plugin_of

    found = [p.name for r in records for p in r.plugins if any(plugin_of(p.kind, key) is None for key in p.keys)]
    return list(dict.fromkeys(found))


def load_recorded(records: Iterable[TrialRecord | None], *, warn: Callable[[str], None] | None = None) -> None:
    """Load the plug-ins ``records`` name, each once, before a model of theirs is built.

    A plug-in that provides the recorded keys already is kept; else the recorded file is loaded, or the import
    name where the file is gone and the name can be imported. ``warn`` (default: a line on stderr) gets one line
    per plug-in whose source's SHA-256 differs from the recorded one.

    Raises:
        AttnsearchError: one line naming the plug-in and its file when neither can be loaded, or when the loaded
            plug-in no longer registers a recorded key.

    Example:
        >>> load_recorded([TrialRecord(0, "complete")])  # built-ins alone: nothing to load
    """
    from .plugins import load_plugins, plugin_of

    tell = warn if warn is not None else _say
    done: set[tuple[str, str]] = set()
    for record in records:
        if record is None:
            continue
        for recorded in record.plugins:
            current = [plugin_of(recorded.kind, key) for key in recorded.keys]
            if any(plugin is None for plugin in current):
                load_plugins([_source(record.number, recorded)])
                current = [plugin_of(recorded.kind, key) for key in recorded.keys]
            for key, plugin in zip(recorded.keys, current, strict=True):
                if plugin is None:
                    raise AttnsearchError(
                        f"plug-in {recorded.name} ({recorded.file}) no longer registers the {recorded.kind} "
                        f"{key!r} trial {record.number} used"
                    )
            plugin = current[0]
            assert plugin is not None
            if (plugin.name, recorded.sha256) in done:
                continue
            done.add((plugin.name, recorded.sha256))
            if plugin.sha256 != recorded.sha256:
                tell(
                    f"plug-in {recorded.name} changed since trial {record.number} was trained (sha256 "
                    f"{recorded.sha256[:12]}... recorded, {plugin.sha256[:12]}... now in {plugin.file}); "
                    "results may differ"
                )


def load_for_trials(
    store: ResultsStore, numbers: Iterable[object], *, every: bool = False, warn: Callable[[str], None] | None = None
) -> None:
    """:func:`load_recorded` for the trials ``numbers`` of ``store`` (those that have a record: the command checks
    the others), or with ``every`` for every complete trial (``best``, ``--top``: chosen among them)."""
    if every:
        load_recorded([r for r in store.read_records() if r.state == "complete"], warn=warn)
        return
    wanted = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
    load_recorded([store.read_record(n) for n in wanted if store.record_path(n).exists()], warn=warn)


def _source(number: int, recorded: PluginRecord) -> str:
    """What to load a recorded plug-in from: its file, else its import name."""
    if Path(recorded.file).is_file():
        return recorded.file
    try:
        importable = importlib.util.find_spec(recorded.name) is not None
    except (ImportError, ValueError):  # a parent package that is gone, a name that is not one
        importable = False
    if importable:
        return recorded.name
    raise AttnsearchError(
        f"trial {number} needs plug-in {recorded.name} from {recorded.file}, which is gone, and {recorded.name} "
        "cannot be imported: put the file back or pass it with --plugin PATH"
    )


def _say(line: str) -> None:
    from .signals import say

    say(f"attnsearch: warning: {line}")
