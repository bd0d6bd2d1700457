"""Fixtures of the plug-in tests (issue 17)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugin_files import unloaded_after


@pytest.fixture
def forget_plugins() -> Iterator[None]:
    """Whatever a test loads is unloaded after it: keys unregistered, plug-ins and their modules forgotten, traced
    slots dropped. Later tests (``list_backbones()`` compared whole) then see the built-ins alone."""
    with unloaded_after():
        yield
