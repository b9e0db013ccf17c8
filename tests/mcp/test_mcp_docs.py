"""The client configurations docs/mcp.md shows work as written (with the data dir and the
URL of the test's server put in), and the HTTP mount's own guards."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import httpx2
from flwd_mcp.http import transport_security
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from flwd.settings import Settings
from tests.e2e.conftest import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


def doc_configs() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
    configs = [json.loads(block) for block in blocks]
    return [c["mcpServers"]["flwd"] for c in configs if "mcpServers" in c]


async def test_the_documented_stdio_configuration_works(mcp_server: ServerProcess) -> None:
    stdio = next(c for c in doc_configs() if "command" in c)
    command = shutil.which(stdio["command"], path=str(Path(sys.executable).parent))
    assert command is not None
    args = [str(mcp_server.data) if a == "/path/to/.flwd" else a for a in stdio["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_")}
    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(mcp_server.tmp))
    async with Client(params, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "calc_add" in names


def a_token(server: ServerProcess) -> str:
    """A token of the server's, when an installed extension issues them (else the
    placeholder stays: no plugin reads it)."""
    try:
        importlib.import_module("flwd_security.tokens")
    except ImportError:
        return "TOKEN"
    argv = [sys.executable, "-m", "flwd", "token", "create", "--data-dir", str(server.data)]
    argv += ["--name", "mcp-doc", "--scopes", "jobs:read,runs:read,runs:write,artifacts:read"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_the_documented_http_configuration_works(mcp_server: ServerProcess) -> None:
    http = next(c for c in doc_configs() if "url" in c)
    assert http["url"].endswith("/mcp")
    url = mcp_server.url + "/mcp"
    token = a_token(mcp_server)
    headers = {k: v.replace("TOKEN", token) for k, v in http["headers"].items()}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as session,
        Client(streamable_http_client(url, http_client=session), mode="legacy") as client,
    ):
        result = await client.call_tool("hello", {"name": "doc"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["result"] == {"value": {"greeting": "hello doc"}}


def test_system_info_lists_the_extension(mcp_server: ServerProcess) -> None:
    with mcp_server.client() as http:
        assert "mcp" in http.get("/system/info").json()["extensions"]


def test_a_host_not_allowed_is_refused_at_mcp(mcp_server: ServerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Host": "evil.example", "Accept": "application/json, text/event-stream"}
    response = httpx.post(mcp_server.url + "/mcp", json=body, headers=headers, timeout=10)
    assert response.status_code in (400, 403, 421)
    assert "evil.example" not in response.headers.get("access-control-allow-origin", "")


def test_the_sdk_transport_security_gets_the_allowed_hosts() -> None:
    local = transport_security(Settings(host="127.0.0.1", allowed_hosts=("flwd.example.com",)))
    assert local.enable_dns_rebinding_protection
    assert {"127.0.0.1:*", "localhost:*", "flwd.example.com", "flwd.example.com:*"} <= set(
        local.allowed_hosts
    )
    assert "https://flwd.example.com" in local.allowed_origins
    anywhere = transport_security(Settings(host="0.0.0.0"))
    assert not anywhere.enable_dns_rebinding_protection
