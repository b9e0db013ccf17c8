"""A client with the SDK's defaults negotiates protocol 2026-07-28 (per-request
envelopes, no session): tools, progress and `tools/list_changed` (on a
`subscriptions/listen` stream) work there too."""

from __future__ import annotations

import anyio
from mcp import Client

from tests.e2e.conftest import ServerProcess
from tests.mcp.conftest import add_job


async def test_a_2026_client_calls_tools_and_hears_of_changes(mcp_server: ServerProcess) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(mcp_server.url + "/mcp", read_timeout_seconds=60) as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("calc_add", {"a": 1, "b": 2}, progress_callback=on_progress)
        assert result.structured_content is not None
        assert result.structured_content["result"] == {"value": {"sum": 3}}
        assert progress and progress[-1] == 100.0
        async with client.listen(tools_list_changed=True) as events:
            add_job(mcp_server.jobs, "added/modern", {"command": "true"})
            with anyio.fail_after(30):
                async for event in events:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        names = {tool.name for tool in (await client.list_tools(cache_mode="refresh")).tools}
    assert "added_modern" in names
