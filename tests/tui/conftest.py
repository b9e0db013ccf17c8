"""TUI fixtures: the app driven by Textual's pilot (`App.run_test`), against a real
`flwd serve` (the e2e `ServerProcess`) or a respx-mocked API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from flwd.client import FlwdClient
from tests.e2e.conftest import ServerProcess

#: The terminal every test uses: the smallest the TUI promises to work in.
SIZE = (80, 24)


async def until(pilot: Pilot[None], check: Callable[[], object], timeout: float = 15.0) -> None:
    """Let the app run until `check()` holds (bounded in time; no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await pilot.pause(0.05)


@pytest.fixture(scope="module")
def tui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("flwd-tui"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def tui_client(tui_server: ServerProcess) -> AsyncIterator[FlwdClient]:
    async with FlwdClient(tui_server.url) as client:
        yield client


@pytest.fixture
def snapshot_dir() -> Path:
    return Path(__file__).parent / "snapshots"
