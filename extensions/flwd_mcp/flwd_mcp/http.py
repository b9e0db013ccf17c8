"""MCP over streamable HTTP at `/mcp` inside `flwd serve`.

Mounted on the API application through the `configure_app` hook, so the core's request
guards (allowed hosts, body checks, ...) and its access middleware cover it like every
route. The SDK's session manager runs in a lifespan added next to the core's, and its own
transport security is given the same allowed hosts. Handlers call the server's run
service and job registry in-process, on behalf of the request's caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import pluggy
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.handlers import asgi
from litestar.types import Receive, Scope, Send
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from flwd.access import VIEW_JOBS, Actor
from flwd.api.guards import HostPolicy
from flwd.settings import Settings
from flwd_mcp.backends import EngineFlwd, Flwd
from flwd_mcp.server import FlwdMcp

MCP_PATH: Final = "/mcp"
#: the caller of the HTTP request being served (for handlers run in its own task)
_CALLER: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("flwd_mcp_caller")


def caller(scope: Scope) -> Actor | None:
    """The caller of a request, as the core's access middleware identified it; None for
    an anonymous caller.

    The one place that knows where the core keeps the caller: `flwd.api.access.actor_of`
    when the core provides it (the access middleware of the security work), else nobody
    (anonymous)."""
    actor_of = _actor_of()
    if actor_of is None:
        return None
    actor = actor_of(ASGIConnection(scope))
    return actor if isinstance(actor, Actor) else None


@functools.cache
def _actor_of() -> Callable[[ASGIConnection[Any, Any, Any, Any]], Any] | None:
    # looked up once: a failed import searches the whole path again each time
    try:
        access = importlib.import_module("flwd.api.access")
    except ImportError:
        return None
    found = getattr(access, "actor_of", None)
    return found if callable(found) else None


def services_of(app: Litestar) -> Any:
    """The services the app's lifespan owns (an object with `runs` and `registry`)."""
    for name in ("backend", "services"):
        found = app.state.get(name)
        if found is not None:
            return found
    raise RuntimeError("the flwd services are not started")


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection, with the hosts the core's guards allow: the
    loopback names when bound to loopback, plus `allowed_hosts`; off when the core
    answers any host (bound to another address with no `allowed_hosts`)."""
    policy = HostPolicy(settings.host, settings.allowed_hosts)
    if not policy.enforced:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = sorted(policy.allowed)
    origins = [o.rstrip("/") for o in settings.cors_origins]
    for host in hosts:
        origins += [f"http://{host}", f"http://{host}:*", f"https://{host}", f"https://{host}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *(f"{h}:*" for h in hosts)],
        allowed_origins=origins,
    )


class McpEndpoint:
    """The `/mcp` mount: one SDK session manager and one `FlwdMcp` per server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm: pluggy.PluginManager | None = None
        self.mcp = FlwdMcp(self._flwd_for)
        self.manager = StreamableHTTPSessionManager(
            app=self.mcp.server, security_settings=transport_security(settings)
        )
        self._services: Any = None

    def _flwd_for(self, ctx: ServerRequestContext[Any, Any]) -> Flwd:
        request = ctx.request
        scope = getattr(request, "scope", None)
        actor = caller(scope) if scope is not None else _CALLER.get(None)
        services = self._services
        if services is None or self.pm is None:
            raise RuntimeError("the flwd services are not started")
        return EngineFlwd(services.runs, services.registry, self.pm, actor)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _CALLER.set(caller(scope))
        try:
            await self.manager.handle_request(scope, receive, send)  # type: ignore[arg-type]
        finally:
            _CALLER.reset(token)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Runs after the core's lifespan started the services; stops before them."""
        self._services = services_of(app)
        self.pm = app.state.get("plugin_manager")
        # the catalogue-change stream of `GET /events/jobs`, from the current catalogue
        from flwd.api.events import catalog_changes

        registry = self._services.registry
        async with self.manager.run():
            watcher = asyncio.create_task(
                self.mcp.watch_catalog(catalog_changes(registry, registry.catalog)),
                name="flwd-mcp-catalog",
            )
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await self.mcp.aclose()
        self._services = None


def mount(config: AppConfig, settings: Settings) -> McpEndpoint:
    """Add `/mcp` and its lifespan to the application's configuration."""
    endpoint = McpEndpoint(settings)

    # the action the core's access control checks for the whole endpoint (`opt["action"]`,
    # see flwd.api.access): listing the tools needs view-jobs; each tool call then checks
    # its own job or run
    @asgi(MCP_PATH, is_mount=True, copy_scope=True, opt={"action": VIEW_JOBS})
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint.handle(scope, receive, send)

    config.route_handlers.append(mcp_endpoint)
    config.lifespan.append(endpoint.lifespan)
    return endpoint
