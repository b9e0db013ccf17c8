"""The in-process side asks `permission_allowed` for every job and run an MCP caller
touches: a server whose access plugin denies some actions, served by uvicorn in the
test's own event loop (its engine is real: store, scheduler, processes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import flwd_mcp.plugin
import pytest
import uvicorn
from mcp import Client

from flwd.access import CANCEL_RUN, RUN_JOB, VIEW_RUNS, Actor, Resource
from flwd.app import create_app
from flwd.hookspecs import hookimpl
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings
from tests.e2e.conftest import free_port


class DenySome:
    """Nobody may run `secret/job`, read runs of `hidden`, or cancel anything."""

    @hookimpl
    def permission_allowed(
        self, actor: Actor | None, action: str, resource: Resource
    ) -> bool | None:
        if action == RUN_JOB and resource.job_id == "secret/job":
            return False
        if action == VIEW_RUNS and resource.job_id == "hidden":
            return False
        if action == CANCEL_RUN:
            return False
        return None


@pytest.fixture
async def denying_server(tmp_path: Path) -> AsyncIterator[str]:
    jobs = tmp_path / "jobs"
    for job_id in ("open", "secret/job", "hidden"):
        (jobs / job_id).mkdir(parents=True)
        (jobs / job_id / "config.yaml").write_text(json.dumps({"command": "echo hi"}))
    port = free_port()
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        sources=(JobSource(name="local-fs", path=str(jobs)),),
        port=port,
        kill_grace=0.5,
    )
    # only this extension and the denying plugin (no other installed extension decides)
    pm = make_plugin_manager(load_entrypoints=False, extra=[flwd_mcp.plugin, DenySome()])
    app = create_app(settings, pm)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(400):  # bounded: 20 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_a_caller_sees_and_calls_only_what_it_may(denying_server: str) -> None:
    async with Client(denying_server + "/mcp", mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"open", "hidden"} <= names
        assert "secret_job" not in names
        refused = await client.call_tool("secret_job", {})
        assert refused.is_error and "unknown tool" in str(refused.content[0])
        ran = await client.call_tool("open", {})
        assert not ran.is_error and ran.structured_content is not None
        run_id = ran.structured_content["run_id"]
        cancel = await client.call_tool("flwd__cancel_run", {"run_id": run_id})
        assert cancel.is_error and "not allowed" in str(cancel.content[0])
        hidden = await client.call_tool("hidden", {})
        assert hidden.is_error  # it runs, but its run may not be read back
        runs = await client.call_tool("flwd__list_runs", {})
        assert runs.structured_content is not None
        assert {r["job_id"] for r in runs.structured_content["runs"]} == {"open"}
