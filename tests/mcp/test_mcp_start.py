"""The MCP side of `flwd serve` starts in the background; one that could not start (out
of descriptors while importing the SDK, say) is answered 503 and started again."""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from types import ModuleType

import flwd_mcp.mount
import httpx
import pytest
from mcp import Client

from tests.e2e.conftest import MCP_HEADERS, MCP_INITIALIZE
from tests.mcp.support import in_process_server

EMFILE = "Too many open files"


async def test_an_mcp_endpoint_that_could_not_start_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(flwd_mcp.mount, "RETRY_FIRST", 0.5)
    real = importlib.import_module
    failed: list[str] = []

    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == "flwd_mcp.http" and len(failed) < 2:
            failed.append(name)
            raise ImportError(
                "_cffi_backend.so: cannot open shared object file: Too many open files"
            )
        return real(name, package)

    monkeypatch.setattr(flwd_mcp.mount.importlib, "import_module", import_module)
    with caplog.at_level(logging.ERROR, logger="flwd_mcp.mount"):
        async with in_process_server(tmp_path, ("open",)) as url:
            async with httpx.AsyncClient(timeout=30) as http:
                statuses = []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    answer = await http.post(url + "/mcp", json=MCP_INITIALIZE, headers=MCP_HEADERS)
                    statuses.append(answer.status_code)
                    if answer.status_code != 503:
                        break
                    assert answer.headers["retry-after"] == "1"
                    assert "not available" in answer.json()["detail"]
            assert statuses[0] == 503 and statuses[-1] == 200, statuses
            async with Client(url + "/mcp", mode="legacy") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
            assert "open" in names
    assert failed == ["flwd_mcp.http", "flwd_mcp.http"]
    errors = [r for r in caplog.records if r.name == "flwd_mcp.mount"]
    # the first failure with its traceback, the second in a line
    assert [r.exc_info is not None for r in errors] == [True, False]
    assert "retrying in 0.5s" in errors[0].getMessage()
    assert (
        "Too many open files" in errors[1].getMessage()
        and "retrying in 1s" in errors[1].getMessage()
    )
