"""The dashboard's state after the scenario run (see scenario.py)."""

from __future__ import annotations

import pytest
from scenario import scenario, state_of

from attnsearch.dashboard.state import DashboardState


@pytest.fixture
def state() -> DashboardState:
    return state_of(scenario())
