"""`/mcp` on the API application (the `configure_app` hook), without importing the SDK.

The SDK and its protocol types take seconds to import on a loaded two-core machine
(more than the rest of the server), so `flwd serve` does not wait for them: the mount's
lifespan imports `flwd_mcp.http` on a worker thread and starts its session manager in a
task of its own, while the server already answers. A request to `/mcp` that arrives
before it is ready waits for it (at most `READY_TIMEOUT` seconds, then 503). A side that
could not start is started again (`McpMount._serve`); meanwhile requests get the 503 at
once.

The mount is a route of the app, so the core's middleware covers it: request guards
(allowed hosts, bodies) and access control (its `opt["action"]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.handlers import asgi
from litestar.types import Receive, Scope, Send

from flwd.access import VIEW_JOBS, Actor
from flwd.api.access import actor_of
from flwd.api.problems import problem_response
from flwd.settings import Settings

MCP_PATH: Final = "/mcp"
#: seconds a request waits for the MCP side to be ready
READY_TIMEOUT: Final = 60.0
#: seconds before the MCP side is started again after it failed (out of descriptors,
#: say), doubling each time up to `RETRY_MAX`
RETRY_FIRST: Final = 1.0
RETRY_MAX: Final = 30.0
log = logging.getLogger(__name__)


def caller(scope: Scope) -> Actor | None:
    """The caller of a request, as the core's access middleware identified it (None: an
    anonymous caller)."""
    actor = actor_of(ASGIConnection(scope))
    return actor if isinstance(actor, Actor) else None


def services_of(app: Litestar) -> Any:
    """The services the app's lifespan owns (an object with `runs` and `registry`)."""
    for name in ("backend", "services"):
        found = app.state.get(name)
        if found is not None:
            return found
    raise RuntimeError("the flwd services are not started")


async def _not_ready(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    request: Request[Any, Any, Any] = Request(scope, receive)
    response = problem_response(request, "not-ready", detail, retry_after=1)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


class McpMount:
    """The `/mcp` ASGI app and its lifespan; the SDK side (`flwd_mcp.http.McpEndpoint`)
    is made once the services run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint: Any = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)
            except TimeoutError:
                await _not_ready(scope, receive, send, "The MCP endpoint is still starting")
                return
        if self.endpoint is None:
            await _not_ready(scope, receive, send, "The MCP endpoint is not available")
            return
        await self.endpoint.handle(scope, receive, send, caller(scope))

    async def _serve(self, app: Litestar) -> None:
        """Start the MCP side and keep it up until the server stops: if it cannot start
        (or fails later), requests are answered 503 and it is started again after
        `RETRY_FIRST` seconds, then twice as long each time up to `RETRY_MAX`. The first
        failure is logged with its traceback, the next ones in a line each."""
        delay, failures = RETRY_FIRST, 0
        while not self._stop.is_set():
            try:
                http = await asyncio.to_thread(importlib.import_module, "flwd_mcp.http")
                endpoint = http.McpEndpoint(
                    self.settings, services_of(app), app.state.get("plugin_manager"), caller
                )
                async with endpoint.running():
                    self.endpoint = endpoint
                    self._ready.set()
                    await self._stop.wait()
                return
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.exception("the MCP endpoint could not start; retrying in %gs", delay)
                else:
                    log.error("the MCP endpoint could not start (%s); retrying in %gs", exc, delay)
            finally:
                self.endpoint = None
                self._ready.set()  # waiting requests are answered (503)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Runs after the core's lifespan started the services; stops before them."""
        self._ready.clear()
        self._stop.clear()
        task = asyncio.create_task(self._serve(app), name="flwd-mcp")
        try:
            yield
        finally:
            self._stop.set()
            await task


def mount(config: AppConfig, settings: Settings) -> McpMount:
    """Add `/mcp` and its lifespan to the application's configuration."""
    endpoint = McpMount(settings)

    # the action the core's access control checks for the whole endpoint (`opt["action"]`,
    # see flwd.api.access): listing the tools needs view-jobs; each tool call then checks
    # its own job or run
    @asgi(MCP_PATH, is_mount=True, copy_scope=True, opt={"action": VIEW_JOBS})
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint.handle(scope, receive, send)

    config.route_handlers.append(mcp_endpoint)
    config.lifespan.append(endpoint.lifespan)
    return endpoint
