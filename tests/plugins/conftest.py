"""Fixtures of the plug-in tests (issue 17)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from attnsearch import plugin_checks, plugins
from attnsearch.model import _traced_slots


@pytest.fixture
def forget_plugins() -> Iterator[None]:
    """Whatever a test loads is unloaded after it: keys unregistered, plug-ins and their modules forgotten, traced
    slots dropped. Later tests (``list_backbones()`` compared whole) then see the built-ins alone."""
    before = plugin_checks.registered()
    loaded, specs = dict(plugins._LOADED), list(plugins._SPECS)
    try:
        yield
    finally:
        plugin_checks.unregister(plugin_checks.gained(before))
        for name in set(plugins._LOADED) - set(loaded):
            if name.startswith(plugins.FILE_PREFIX):
                sys.modules.pop(name, None)
        plugins._LOADED.clear()
        plugins._LOADED.update(loaded)
        plugins._SPECS[:] = specs
        _traced_slots.cache_clear()
