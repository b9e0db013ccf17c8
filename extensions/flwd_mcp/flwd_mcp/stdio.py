"""`flwd mcp`: MCP over stdio for desktop agents, in front of a running flwd server.

The server is the one running on the local data dir (its `server.json`, with the token
it names) or the one given with `--server` (and `--token`). Every request goes through
`FlwdClient`, so the server applies the token's scopes, tenant and job patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from mcp.server.stdio import stdio_server

from flwd.client import FlwdClient
from flwd.errors import FlwdError
from flwd_mcp.backends import ClientFlwd
from flwd_mcp.server import FlwdMcp

log = logging.getLogger(__name__)
#: seconds before following the catalogue again after losing the server
RECONNECT_DELAY = 5.0


async def catalog_changes(client: FlwdClient, flwd: ClientFlwd) -> AsyncIterator[None]:
    """One item per `jobs.changed` of the server; follows it again after losing it. A
    token that may not follow them (`view-events`) ends this: clients then see a new
    job when they list the tools again, without being told."""
    while True:
        try:
            async for _ in client.follow_jobs():
                flwd.forget_jobs()
                yield None
        except FlwdError as exc:
            if exc.status in (401, 403):
                log.warning("not following the catalogue's changes: %s", exc.detail)
                flwd.remember_jobs = False
                flwd.forget_jobs()
                return
            log.warning("lost the server's catalogue changes (%s); retrying", exc.detail)
        flwd.forget_jobs()
        await asyncio.sleep(RECONNECT_DELAY)


async def serve_stdio(url: str, token: str | None) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    async with FlwdClient(url, token=token) as client:
        flwd = ClientFlwd(client)
        mcp = FlwdMcp(lambda ctx: flwd)
        async with stdio_server() as (read, write):
            watcher = asyncio.create_task(
                mcp.watch_catalog(catalog_changes(client, flwd)), name="flwd-mcp-catalog"
            )
            try:
                await mcp.server.run(read, write, mcp.initialization_options())
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await mcp.aclose()
