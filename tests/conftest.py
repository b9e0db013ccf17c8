"""Shared fixtures. Those of the HTTP layer are prefixed `api_`."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from flwd.app import create_app
from flwd.models import Diagnostic, InvalidJob
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings
from tests.api_support import FakeCatalog, FakeRegistry, FakeRunService, fake_services_factory, job


@pytest.fixture
def api_service(tmp_path: pathlib.Path) -> FakeRunService:
    """An in-memory run service with three jobs (one with a required argument) and one
    invalid job folder."""
    catalog = FakeCatalog(
        [
            job("hello", description="Say hello", version="1.0.0"),
            job("backup/daily", args={"type": "object", "required": ["target"]}),
            job("backup/weekly"),
        ],
        invalid=[
            InvalidJob(
                id="broken",
                source="local-fs",
                path="broken",
                diagnostics=(Diagnostic(file="broken/config.yaml", line=3, reason="bad yaml"),),
            )
        ],
    )
    return FakeRunService(FakeRegistry(catalog), artifact_dir=tmp_path)


@pytest.fixture
def api_app(api_service: FakeRunService) -> Litestar:
    settings = Settings(max_body_bytes=4096, heartbeat=0.5, watch=True)
    return create_app(
        settings,
        make_plugin_manager(load_entrypoints=False),
        services_factory=fake_services_factory(api_service),
    )


@pytest.fixture
async def api_client(api_app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    # A loopback Host: the app answers only those (flwd.api.guards), unlike the test
    # client's default `testserver.local`.
    async with AsyncTestClient(
        app=api_app, base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as client:
        yield client
