"""`/mcp` behind the security extension's bearer tokens: a real `flwd serve` under the
`permissive` profile (tokens and scopes as under `secure`; its steps are not sandboxed, so
pytest's 0700 temporary dirs need not be searchable by a run's own user)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import MCP_HEADERS, MCP_INITIALIZE, ServerProcess


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("flwd-mcp-tokens"), FLWD_PROFILE="permissive")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_token(server: ServerProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flwd", "token", "create", "--data-dir", str(server.data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def connect(server: ServerProcess, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as session,
        Client(
            streamable_http_client(server.url + "/mcp", http_client=session), mode="legacy"
        ) as client,
    ):
        yield client


def refused(server: ServerProcess, token: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.url + "/mcp", json=MCP_INITIALIZE, headers=headers, timeout=30)


def test_mcp_needs_a_token_with_the_jobs_scope(secure: ServerProcess) -> None:
    assert refused(secure, None).status_code == 401
    assert refused(secure, "flwd_not-a-token").status_code == 401
    runs_only = make_token(secure, "--name", "runs-only", "--scopes", "runs:read")
    assert refused(secure, runs_only).status_code == 403


async def test_a_token_sees_and_calls_only_what_its_scopes_allow(secure: ServerProcess) -> None:
    reader = make_token(secure, "--name", "reader", "--scopes", "jobs:read")
    async with connect(secure, reader) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "hello" not in names  # may not run jobs: no job is a tool
        result = await client.call_tool("hello", {})
        assert result.is_error
    runner = make_token(
        secure, "--name", "runner", "--scopes", "jobs:read,runs:read,runs:write,artifacts:read"
    )
    async with connect(secure, runner) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "hello" in names
        done = await client.call_tool("hello", {"name": "token"})
    assert not done.is_error, done
    assert done.structured_content is not None
    assert done.structured_content["status"] == "success"


async def test_a_confined_token_sees_only_its_jobs(secure: ServerProcess) -> None:
    demo = make_token(
        secure,
        "--name",
        "demo-only",
        "--scopes",
        "jobs:read,runs:read,runs:write",
        "--job-pattern",
        "demo/**",
    )
    async with connect(secure, demo) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "demo_ticker" in names and "hello" not in names
        outside = await client.call_tool("hello", {})
    assert outside.is_error
