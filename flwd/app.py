"""`create_app(settings, pm)`: the Litestar application behind `flwd serve` and the tests.

The lifespan owns the job registry (catalog + watchers) and the run service (store,
scheduler, executor); handlers receive them through dependency injection. Every error is
answered as RFC 9457 problem details by `flwd.api.problems`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

import pluggy
from litestar import Litestar, Router, get
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Server, Tag
from litestar.response import Redirect
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)

from flwd import API_PREFIX, __version__
from flwd.api.access import OPEN, AccessControl, route_action
from flwd.api.artifacts import ArtifactController
from flwd.api.deps import dependencies
from flwd.api.docs_assets import assets_router, swagger_plugin
from flwd.api.events import EventController
from flwd.api.guards import RequestGuards, track_response
from flwd.api.head import head_as_get
from flwd.api.jobs import JobController
from flwd.api.problems import EXCEPTION_HANDLERS
from flwd.api.query import refuse_unknown_query
from flwd.api.request_id import add_request_id
from flwd.api.runs import RunController
from flwd.api.services import ServicesFactory, default_services
from flwd.api.system import SystemController
from flwd.settings import Settings

DOCS_PATH = "/api/docs"

_DESCRIPTION = """\
flwd turns a directory of scripts into typed, API-callable jobs.

Errors are `application/problem+json` (RFC 9457); see docs/problems.md for every `type`.
Live streams (`/events/runs`, `/runs/{run_id}/events`, `/runs/{run_id}/logs?follow=true`)
are Server-Sent Events whose `id:` is a global event id usable as `Last-Event-ID`."""


def openapi_config() -> OpenAPIConfig:
    """OpenAPI at `/api/docs/openapi.json`; Swagger UI at `/api/docs`, its JavaScript and
    CSS served by flwd itself (`flwd.api.docs_assets`), so it works without internet."""
    return OpenAPIConfig(
        title="flwd",
        version=__version__,
        description=_DESCRIPTION,
        path=DOCS_PATH,
        servers=[Server(url="/")],
        tags=[
            Tag(name="jobs", description="The catalog of discovered jobs"),
            Tag(name="runs", description="Runs, their steps and logs"),
            Tag(name="artifacts", description="Files produced by runs"),
            Tag(name="events", description="Server-Sent Events"),
            Tag(name="system", description="Health and configuration"),
        ],
        render_plugins=[swagger_plugin("/"), JsonRenderPlugin(path="/openapi.json")],
        # the docs page and the OpenAPI document are open to anyone (flwd.api.access)
        openapi_router=Router(
            DOCS_PATH, route_handlers=[], include_in_schema=False, opt=route_action(OPEN)
        ),
    )


class FlwdApp(Litestar):
    """Litestar, with the request guards (`flwd.api.guards`) and the response hooks
    (`X-Request-ID`, connection tracking) around routing itself, and `HEAD` on every `GET`
    route (`flwd.api.head`).

    Litestar applies app middleware only to requests that reach a route: a 404 (unknown
    path) or 405 (method not allowed) is answered by its router first. Wrapping the whole
    application here makes those answers pass the same guards (a bad `Host` on any path
    is refused as `host-not-allowed`)."""

    request_guards: RequestGuards | None = None

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        http_scope = cast(Scope, scope)
        hooked = _with_response_hooks(cast(Send, send), http_scope)
        if self.request_guards is None:
            await self._route(http_scope, cast(Receive, receive), hooked)
        else:
            await self.request_guards.handle(
                http_scope, cast(Receive, receive), hooked, self._route
            )

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if cast(HTTPScope, scope)["method"] == "HEAD":
            await head_as_get(super().__call__, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _with_response_hooks(send: Send, scope: Scope) -> Send:
    """Every response message, refusals and 404s included, gets its `X-Request-ID`, and
    its connection learns when it is complete."""

    async def hooked(message: Message) -> None:
        await add_request_id(message, scope)
        await track_response(message, scope)
        await send(message)

    return hooked


@get("/", include_in_schema=False, sync_to_thread=False, opt=route_action(OPEN))
def root() -> Redirect:
    """`GET /`: to the API documentation."""
    return Redirect(path=DOCS_PATH, status_code=307)


def create_app(
    settings: Settings,
    pm: pluggy.PluginManager,
    *,
    services_factory: ServicesFactory = default_services,
) -> Litestar:
    """The API application. `services_factory` builds the services the lifespan owns; the
    default is the real registry and run service. Every plugin's `configure_app` sees its
    configuration before it is built."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with services_factory(settings, pm) as services:
            app.state.services = services
            pm.hook.startup(settings=settings)
            try:
                yield
            finally:
                pm.hook.shutdown(settings=settings)
                app.state.services = None

    extra: list[Any] = list(
        itertools.chain.from_iterable(pm.hook.register_routes(settings=settings))
    )
    api = Router(
        path=API_PREFIX,
        route_handlers=[
            JobController,
            RunController,
            ArtifactController,
            EventController,
            SystemController,
            *extra,
        ],
    )
    state = _initial_state(settings, pm)

    def configure(config: AppConfig) -> AppConfig:
        pm.hook.configure_app(config=config, settings=settings)
        return config

    app = FlwdApp(
        route_handlers=[root, api, assets_router()],
        lifespan=[lifespan],
        dependencies=dict(dependencies(state)),
        exception_handlers=EXCEPTION_HANDLERS,
        # who the caller is and whether it may perform the route's action: around every
        # route and mount (the request guards wrap routing itself: FlwdApp)
        middleware=[AccessControl(pm)],
        before_request=refuse_unknown_query,
        # flwd configures logging itself (`flwd serve`); Litestar's own set-up would
        # replace its format and its rate limit on repeated lines.
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        state=state,
        debug=False,
        # after the built-in configuration, before the app is built: extensions add
        # middleware, guards, Litestar plugins, routes, mounted apps (MCP's /mcp),
        # lifespans, security schemes ...
        on_app_init=[configure],
    )
    # Host, CORS, body media type and depth, stream cap: around routing, so around every
    # route and mount and unknown paths too (FlwdApp).
    app.request_guards = RequestGuards(settings)
    return app


def _initial_state(settings: Settings, pm: pluggy.PluginManager) -> State:
    return State({"settings": settings, "plugin_manager": pm, "services": None})
