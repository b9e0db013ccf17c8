"""Connecting the SDK's own client to a `flwd serve`, over either transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import flwd_mcp.plugin
import mcp_types as types
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from flwd.app import create_app
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings
from tests.e2e.conftest import ServerProcess, free_port

TRANSPORTS = ("http", "stdio")


class Recorder:
    """Every notification and exception the client receives, and events to wait on."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.tools_changed = anyio.Event()
        self.updated: dict[str, anyio.Event] = {}

    def wait_updated(self, uri: str) -> anyio.Event:
        return self.updated.setdefault(uri, anyio.Event())

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)
        if isinstance(message, types.ToolListChangedNotification):
            self.tools_changed.set()
        if isinstance(message, types.ResourceUpdatedNotification):
            self.wait_updated(str(message.params.uri)).set()

    def dump(self) -> str:
        return "\n".join(
            m.model_dump_json() if hasattr(m, "model_dump_json") else repr(m) for m in self.messages
        )


def target(server: ServerProcess, transport: str) -> Any:
    if transport == "http":
        return server.url + "/mcp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_")}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "flwd", "mcp", "--data-dir", str(server.data)],
        env=env,
        cwd=str(server.tmp),
    )


@contextlib.asynccontextmanager
async def connect(
    server: ServerProcess, transport: str, recorder: Recorder | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    """The SDK's client on `server` over `transport`, speaking protocol 2025-11-25."""
    async with Client(
        target(server, transport),
        mode="legacy",
        message_handler=recorder,
        read_timeout_seconds=60,
        **kwargs,
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def in_process_server(
    tmp_path: Path, job_ids: tuple[str, ...], plugins: tuple[object, ...] = ()
) -> AsyncIterator[str]:
    """A server with the MCP extension and `plugins` only (no other installed extension
    decides), each of `job_ids` a job echoing `hi`, served by uvicorn in the test's own
    event loop (its engine is real: store, scheduler, processes); its base URL."""
    jobs = tmp_path / "jobs"
    for job_id in job_ids:
        (jobs / job_id).mkdir(parents=True)
        (jobs / job_id / "config.yaml").write_text(json.dumps({"command": "echo hi"}))
    port = free_port()
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        sources=(JobSource(name="local-fs", path=str(jobs)),),
        port=port,
        kill_grace=0.5,
    )
    pm = make_plugin_manager(load_entrypoints=False, extra=[flwd_mcp.plugin, *plugins])
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
