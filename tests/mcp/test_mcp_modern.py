"""A client with the SDK's defaults negotiates protocol 2026-07-28 (per-request
envelopes, no session): tools, progress, `tools/list_changed` and run updates (on a
`subscriptions/listen` stream) work there too."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated

from tests.e2e.conftest import ServerProcess
from tests.mcp.conftest import add_job
from tests.mcp.support import TRANSPORTS, target


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


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_2026_client_follows_a_run_on_its_listen_stream(
    mcp_server: ServerProcess, transport: str
) -> None:
    # a 2026-07-28 client subscribes by naming the run's resources on a listen stream;
    # a URI the caller cannot read (no such run) is left out of what the server honors
    with mcp_server.client() as http:
        run_id = http.post("/runs", json={"job_id": "demo/sleeper"}).json()["run_id"]
        uri, logs = f"flwd://runs/{run_id}", f"flwd://runs/{run_id}/logs"
        missing = "flwd://runs/run_01JZZZZZZZZZZZZZZZZZZZZZZZ"
        try:
            async with Client(target(mcp_server, transport), read_timeout_seconds=60) as client:
                assert client.protocol_version == "2026-07-28"
                asked = [uri, logs, missing]
                async with client.listen(resource_subscriptions=asked) as events:
                    assert events.honored.resource_subscriptions == [uri, logs]
                    # what the run did before the stream opened comes first, at once
                    early: set[str] = set()
                    with anyio.fail_after(30):
                        while True:
                            with anyio.move_on_after(1):
                                event = await events.__anext__()
                                assert isinstance(event, ResourceUpdated)
                                early.add(event.uri)
                                continue
                            break  # a second without updates: caught up
                    assert early == {uri, logs}
                    # then the run ends: both are updated again
                    assert http.post(f"/runs/{run_id}/cancel").json()["status"] == "cancelled"
                    ended: set[str] = set()
                    with anyio.fail_after(30):
                        async for event in events:
                            assert isinstance(event, ResourceUpdated)
                            ended.add(event.uri)
                            if ended == {uri, logs}:
                                break
        finally:
            http.post(f"/runs/{run_id}/cancel")


async def test_a_listen_stream_follows_at_most_a_hundred_uris(mcp_server: ServerProcess) -> None:
    with mcp_server.client() as http:
        run_id = http.post("/runs", json={"job_id": "demo/sleeper"}).json()["run_id"]
        try:
            others = [f"flwd://runs/run_{n:026d}" for n in range(100)]
            async with (
                Client(mcp_server.url + "/mcp", read_timeout_seconds=60) as client,
                client.listen(resource_subscriptions=[f"flwd://runs/{run_id}"]) as first,
                client.listen(resource_subscriptions=[*others, f"flwd://runs/{run_id}"]) as past,
            ):
                assert first.honored.resource_subscriptions == [f"flwd://runs/{run_id}"]
                assert not past.honored.resource_subscriptions  # the run's URI came 101st
        finally:
            http.post(f"/runs/{run_id}/cancel")
