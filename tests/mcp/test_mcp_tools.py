"""The MCP extension end to end: the SDK's own client against a real `flwd serve`, over
streamable HTTP (`/mcp`, handled in-process) and over stdio (`flwd mcp`, through the
HTTP API)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from flwd_mcp.naming import tool_name
from mcp.client.session import ClientRequestContext

from tests.e2e.conftest import ServerProcess
from tests.mcp.conftest import SECRET, add_job
from tests.mcp.support import TRANSPORTS, Recorder, connect

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)
#: bound on every wait of these tests
WAIT = 30.0


async def test_every_job_is_a_tool_with_schemas_and_annotations(
    mcp_server: ServerProcess, transport: str
) -> None:
    async with connect(mcp_server, transport) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"hello", "demo_ticker", "calc_add", "ops_login", "needs-target"} <= set(tools)
    assert {"flwd__list_jobs", "flwd__list_runs", "flwd__get_run", "flwd__read_log"} <= set(tools)
    add = tools["calc_add"]
    assert add.description is not None and "Add a and b" in add.description
    assert add.input_schema["required"] == ["a", "b"]
    assert add.annotations is not None
    assert add.annotations.read_only_hint is True
    assert add.annotations.destructive_hint is False
    assert add.annotations.idempotent_hint is True
    assert add.output_schema is not None
    value = add.output_schema["properties"]["result"]["anyOf"][1]["properties"]["value"]
    assert value["properties"] == {"sum": {"type": "integer"}}
    token = tools["ops_login"].input_schema["properties"]["token"]
    assert token["writeOnly"] is True


async def test_calling_a_job_tool_runs_it_with_progress_and_structured_content(
    mcp_server: ServerProcess, transport: str
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with connect(mcp_server, transport) as client:
        result = await client.call_tool(
            "calc_add", {"a": 2, "b": 40}, progress_callback=on_progress
        )
    assert not result.is_error, result
    content = result.structured_content
    assert content is not None
    assert content["status"] == "success"
    assert content["result"] == {"value": {"sum": 42}}
    assert content["run_id"].startswith("run_")
    texts = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert "adding 2 and 40" in texts  # the log tail
    assert (50.0, 100.0, "adding") in progress  # the ::progress line
    assert progress[-1][0] == 100.0
    values = [p[0] for p in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    with mcp_server.client() as http:
        assert http.get(f"/runs/{content['run_id']}").json()["status"] == "success"


async def test_artifacts_are_linked(mcp_server: ServerProcess, transport: str) -> None:
    async with connect(mcp_server, transport) as client:
        result = await client.call_tool("report", {})
    assert result.structured_content is not None
    [artifact] = result.structured_content["artifacts"]
    assert artifact["name"] == "report.csv"
    url = artifact["url"]
    with mcp_server.client() as http:
        path = url if url.startswith("/") else url.removeprefix(mcp_server.url)
        response = http.get(mcp_server.url + path)
    assert response.status_code == 200 and response.text == "a,b\n1,2\n"


async def test_invalid_arguments_are_a_tool_error_naming_each_field(
    mcp_server: ServerProcess, transport: str
) -> None:
    async with connect(mcp_server, transport) as client:
        result = await client.call_tool("calc_add", {"a": "two", "b": 1, "c": 3})
    assert result.is_error
    text = result.content[0].text if isinstance(result.content[0], types.TextContent) else ""
    assert "/a:" in text and "integer" in text
    assert "/c" in text


async def test_a_failed_run_is_a_tool_error_with_reason_and_log_tail(
    mcp_server: ServerProcess, transport: str
) -> None:
    async with connect(mcp_server, transport) as client:
        result = await client.call_tool("ops_fail", {})
    assert result.is_error
    texts = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert "failed" in texts and "about to fail" in texts
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    assert result.structured_content["exit_code"] == 3


async def test_missing_argument_is_asked_for_by_elicitation(
    mcp_server: ServerProcess, transport: str
) -> None:
    asked: list[types.ElicitRequestParams] = []

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept", content={"target": "/srv/elicited"})

    async with connect(mcp_server, transport, elicitation_callback=elicit) as client:
        result = await client.call_tool("needs-target", {})
    assert not result.is_error, result
    assert len(asked) == 1
    assert isinstance(asked[0], types.ElicitRequestFormParams)
    assert asked[0].requested_schema["required"] == ["target"]
    texts = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert "/srv/elicited" in texts


async def test_without_elicitation_a_missing_argument_is_a_tool_error(
    mcp_server: ServerProcess, transport: str
) -> None:
    async with connect(mcp_server, transport) as client:
        result = await client.call_tool("needs-target", {})
    assert result.is_error
    assert "target" in str(result.content[0])


async def test_a_missing_secret_is_never_elicited(
    mcp_server: ServerProcess, transport: str
) -> None:
    asked: list[object] = []

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="decline")

    async with connect(mcp_server, transport, elicitation_callback=elicit) as client:
        result = await client.call_tool("ops_login", {})
    assert result.is_error and asked == []
    text = str(result.content[0])
    assert "secret" in text and "/token" in text


async def test_no_secret_value_in_any_response_or_notification(
    mcp_server: ServerProcess, transport: str
) -> None:
    recorder = Recorder()
    seen: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(f"{value} {total} {message}")

    async with connect(mcp_server, transport, recorder) as client:
        result = await client.call_tool(
            "ops_login", {"token": SECRET, "user": "ann"}, progress_callback=on_progress
        )
        seen.append(result.model_dump_json())
        run_id = result.structured_content["run_id"] if result.structured_content else ""
        for name, args in (
            ("flwd__get_run", {"run_id": run_id}),
            ("flwd__read_log", {"run_id": run_id}),
            ("flwd__list_runs", {"job_id": "ops/login"}),
        ):
            seen.append((await client.call_tool(name, args)).model_dump_json())
        for uri in (f"flwd://runs/{run_id}", f"flwd://runs/{run_id}/logs"):
            seen.append((await client.read_resource(uri)).model_dump_json())
        bad = await client.call_tool("ops_login", {"token": 12345678})
        seen.append(bad.model_dump_json())
        short = await client.call_tool("ops_login", {"token": "x"})
        seen.append(short.model_dump_json())
    assert result.structured_content is not None
    assert result.structured_content["status"] == "success"
    everything = "\n".join(seen) + recorder.dump()
    assert "logging in with" in everything
    assert SECRET not in everything
    assert "12345678" not in everything


async def test_generic_tools_and_run_resources(mcp_server: ServerProcess, transport: str) -> None:
    async with connect(mcp_server, transport) as client:
        done = await client.call_tool("hello", {"name": "mcp"})
        assert done.structured_content is not None
        run_id = done.structured_content["run_id"]
        listed = await client.call_tool("flwd__list_jobs", {})
        assert listed.structured_content is not None
        tools = {j["id"]: j["tool"] for j in listed.structured_content["jobs"]}
        assert tools["demo/ticker"] == "demo_ticker"
        runs = await client.call_tool("flwd__list_runs", {"job_id": "hello", "limit": 5})
        assert runs.structured_content is not None
        assert run_id in [r["run_id"] for r in runs.structured_content["runs"]]
        run = await client.call_tool("flwd__get_run", {"run_id": run_id})
        assert run.structured_content is not None
        assert run.structured_content["result"]["value"] == {"greeting": "hello mcp"}
        logged = await client.call_tool("flwd__read_log", {"run_id": run_id, "tail": 5})
        assert logged.structured_content is not None
        assert [line["message"] for line in logged.structured_content["lines"]] == ["hello mcp"]
        missing = await client.call_tool("flwd__get_run", {"run_id": "run_nope"})
        assert missing.is_error
        for name, bad in (
            ("flwd__list_runs", {"status": "nonsense"}),
            ("flwd__list_runs", {"limit": 0}),
            ("flwd__restart_run", {"run_id": run_id, "args": [1]}),
        ):
            refused = await client.call_tool(name, bad)
            assert refused.is_error and "invalid arguments" in str(refused.content[0]), name
        restarted = await client.call_tool("flwd__restart_run", {"run_id": run_id})
        assert restarted.structured_content is not None
        assert restarted.structured_content["run_id"] != run_id
        resource = await client.read_resource(f"flwd://runs/{run_id}")
        [content] = resource.contents
        assert isinstance(content, types.TextResourceContents)
        assert '"status":"success"' in content.text
        log = await client.read_resource(f"flwd://runs/{run_id}/logs")
        [log_content] = log.contents
        assert isinstance(log_content, types.TextResourceContents)
        assert "hello mcp" in log_content.text
        templates = await client.list_resource_templates()
        assert {t.uri_template for t in templates.resource_templates} == {
            "flwd://runs/{run_id}",
            "flwd://runs/{run_id}/logs",
        }


# the 2025-11-25 way (`resources/subscribe`), which the SDK's client marks as removed
# from 2026-07-28 on (test_mcp_modern.py follows a run the 2026-07-28 way)
@pytest.mark.filterwarnings(
    "ignore:resources/subscribe is removed:mcp.shared.exceptions.MCPDeprecationWarning"
)
async def test_subscribed_run_resources_are_updated_as_the_run_progresses(
    mcp_server: ServerProcess, transport: str
) -> None:
    recorder = Recorder()
    with mcp_server.client() as http:
        # long enough to be running still once a (slow to start) stdio client subscribes
        body = {"job_id": "demo/ticker", "args": {"count": 600, "interval": 0.1}}
        run_id = http.post("/runs", json=body).json()["run_id"]
        uri, logs = f"flwd://runs/{run_id}", f"flwd://runs/{run_id}/logs"
        try:
            async with connect(mcp_server, transport, recorder) as client:
                await client.subscribe_resource(uri)
                await client.subscribe_resource(logs)
                with anyio.fail_after(WAIT):
                    await recorder.wait_updated(logs).wait()
                    await recorder.wait_updated(uri).wait()
        finally:
            http.post(f"/runs/{run_id}/cancel")


async def test_cancelling_the_call_cancels_the_run_and_its_processes(
    mcp_server: ServerProcess, transport: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    async with connect(mcp_server, transport) as client:
        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool("ops_hold", {"pidfile": str(pidfile)})

            group.start_soon(call)
            # the job's own process writes it: a file, not an event to wait on
            for _ in range(int(WAIT / 0.05)):
                if pidfile.exists():
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail("the job never wrote its pids")
            group.cancel_scope.cancel()
        pids = [int(p) for p in pidfile.read_text().split()]
        deadline = time.monotonic() + WAIT
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in pids if _alive(p)]
            await anyio.sleep(0.05)
        assert alive == [], "the run's processes outlived the cancelled call"
        runs = await client.call_tool("flwd__list_runs", {"job_id": "ops/hold", "limit": 1})
    assert runs.structured_content is not None
    assert runs.structured_content["runs"][0]["status"] == "cancelled"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def test_the_tool_list_follows_hot_reload(mcp_server: ServerProcess, transport: str) -> None:
    recorder = Recorder()
    job_id = f"added/{transport}-job"
    async with connect(mcp_server, transport, recorder) as client:
        tools = client.server_capabilities.tools
        assert tools is not None and tools.list_changed  # declared, so clients listen
        before = {t.name for t in (await client.list_tools()).tools}
        assert tool_name(job_id) not in before
        add_job(mcp_server.jobs, job_id, {"description": "added later", "command": "true"})
        with anyio.fail_after(WAIT):
            await recorder.tools_changed.wait()
        after = {t.name for t in (await client.list_tools()).tools}
    assert tool_name(job_id) == f"added_{transport}-job"
    assert tool_name(job_id) in after
