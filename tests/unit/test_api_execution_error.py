"""`POST /runs` over the real engine and store: a run that cannot be created at all is the
contract's 500 `execution-error`; a run that starts and fails is still a 201."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from litestar.testing import AsyncTestClient

from flwd.app import create_app
from tests.unit.engine_support import EngineWorld

pytest_plugins = ["tests.unit.conftest_engine"]


async def test_a_store_that_refuses_the_run_is_an_execution_error(
    engine_world: EngineWorld, caplog: pytest.LogCaptureFixture
) -> None:
    engine_world.job("ok", {"command": "echo fine"})
    engine_world.job("bad", {"command": "exit 3"})
    app = create_app(engine_world.settings(), engine_world.pm)
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        failed = await client.post("/api/v1/runs", json={"job_id": "bad", "async": False})
        assert failed.status_code == 201
        assert failed.json()["status"] == "failed"

        # the database itself now refuses every new run (a real SQLite failure)
        with sqlite3.connect(engine_world.data_dir / "flwd.db") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON runs "
                "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        with caplog.at_level(logging.ERROR):
            response = await client.post("/api/v1/runs", json={"job_id": "ok"})
        assert response.status_code == 500
        body = response.json()
        assert body["type"] == "https://flowd.org/problems/execution-error"
        assert body["status"] == 500
        assert "disk says no" not in response.text  # the cause stays in the server log
        assert "disk says no" in caplog.text
        restart = await client.post(f"/api/v1/runs/{failed.json()['run_id']}/restart")
        assert restart.status_code == 500
        assert restart.json()["type"].endswith("/execution-error")
        # domain errors keep their own problem
        missing = await client.post("/api/v1/runs", json={"job_id": "nope"})
        assert missing.status_code == 404

        with sqlite3.connect(engine_world.data_dir / "flwd.db") as db:
            db.execute("DROP TRIGGER refuse")
        again = await client.post("/api/v1/runs", json={"job_id": "ok", "async": False})
        assert again.status_code == 201 and again.json()["status"] == "success"
