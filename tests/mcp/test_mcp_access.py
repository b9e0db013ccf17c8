"""The in-process side asks `permission_allowed` for every job and run an MCP caller
touches: a server whose access plugin denies some actions, served by uvicorn in the
test's own event loop (its engine is real: store, scheduler, processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from flwd.access import CANCEL_RUN, RUN_JOB, VIEW_RUNS, Actor, Resource
from flwd.hookspecs import hookimpl
from tests.mcp.support import in_process_server


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
    async with in_process_server(tmp_path, ("open", "secret/job", "hidden"), (DenySome(),)) as url:
        yield url


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
