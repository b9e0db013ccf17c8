"""MCP over streamable HTTP: the SDK's session manager and transport security, with
handlers calling the server's run service and job registry in-process on behalf of each
request's caller. Imported (on a worker thread) by `flwd_mcp.mount` once the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from typing import Any

import pluggy
from litestar.types import Receive, Scope, Send
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from flwd.access import Actor
from flwd.api.guards import HostPolicy
from flwd.settings import Settings
from flwd_mcp.backends import EngineFlwd, Flwd
from flwd_mcp.server import FlwdMcp

#: the caller of the HTTP request being served (for handlers run in its own task)
_CALLER: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("flwd_mcp_caller")


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
    """One SDK session manager and one `FlwdMcp` per server. `services` has the run
    service (`runs`) and the job registry (`registry`) the app's lifespan owns; `caller`
    tells who made a request (`flwd_mcp.mount.caller`)."""

    def __init__(
        self,
        settings: Settings,
        services: Any,
        pm: pluggy.PluginManager,
        caller: Callable[[Scope], Actor | None],
    ) -> None:
        self.services = services
        self.pm = pm
        self.caller = caller
        self.mcp = FlwdMcp(self._flwd_for)
        self.manager = StreamableHTTPSessionManager(
            app=self.mcp.server, security_settings=transport_security(settings)
        )

    def _flwd_for(self, ctx: ServerRequestContext[Any, Any]) -> Flwd:
        # a handler of a stateful session runs in the session's task: the request it
        # serves is `ctx.request`; otherwise it runs in the request's own task
        scope = getattr(ctx.request, "scope", None)
        actor = self.caller(scope) if scope is not None else _CALLER.get(None)
        return EngineFlwd(self.services.runs, self.services.registry, self.pm, actor)

    async def handle(self, scope: Scope, receive: Receive, send: Send, actor: Actor | None) -> None:
        token = _CALLER.set(actor)
        try:
            await self.manager.handle_request(scope, receive, send)  # type: ignore[arg-type]
        finally:
            _CALLER.reset(token)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session manager, and `tools/list_changed` on each catalogue change."""
        # the catalogue-change stream of `GET /events/jobs`, from the current catalogue
        from flwd.api.events import catalog_changes

        registry = self.services.registry
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
