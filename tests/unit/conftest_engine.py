"""Fixtures of the engine's tests (prefixed `engine_`); helpers are in `engine_support.py`.

Test modules load this with `pytest_plugins = ["tests.unit.conftest_engine"]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.engine_support import EngineWorld


@pytest.fixture
def engine_world(tmp_path: Path) -> Iterator[EngineWorld]:
    world = EngineWorld(tmp_path)
    yield world
    # Every test ends with its engine closed, so every run is over: a job process still
    # alive here is an orphan the engine failed to kill (killed now, and reported).
    left = world.kill_leftovers()
    assert not left, f"job processes survived the test: {left}"
