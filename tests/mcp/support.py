"""Connecting the SDK's own client to a `flwd serve`, over either transport."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.e2e.conftest import ServerProcess

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
