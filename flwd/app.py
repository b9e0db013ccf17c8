"""`create_app(settings, pm)`: the Litestar application behind `flwd serve` and the tests.

The lifespan owns the job registry (catalog + watchers) and the run service (store,
scheduler, executor); handlers receive them through dependency injection. Every error is
answered as RFC 9457 problem details by `flwd.api.problems`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pluggy
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Server, Tag

from flwd import API_PREFIX, __version__
from flwd.api.artifacts import ArtifactController
from flwd.api.backend import BackendFactory, default_backend
from flwd.api.deps import dependencies, require_json_body
from flwd.api.events import EventController
from flwd.api.jobs import JobController
from flwd.api.problems import EXCEPTION_HANDLERS
from flwd.api.request_id import add_request_id
from flwd.api.runs import RunController
from flwd.api.system import SystemController
from flwd.settings import Settings

DOCS_PATH = "/api/docs"

_DESCRIPTION = """\
flwd turns a directory of scripts into typed, API-callable jobs.

Errors are `application/problem+json` (RFC 9457); see docs/problems.md for every `type`.
Live streams (`/events/runs`, `/runs/{run_id}/events`, `/runs/{run_id}/logs?follow=true`)
are Server-Sent Events whose `id:` is a global event id usable as `Last-Event-ID`."""


def openapi_config() -> OpenAPIConfig:
    """OpenAPI at `/api/docs/openapi.json`; Swagger UI at `/api/docs` (its JavaScript and
    CSS load from a CDN, so the viewer needs internet access; the JSON does not)."""
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
        render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
    )


def create_app(
    settings: Settings,
    pm: pluggy.PluginManager,
    *,
    backend_factory: BackendFactory = default_backend,
) -> Litestar:
    """The API application. `backend_factory` builds the services the lifespan owns; the
    default is the real registry and run service."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with backend_factory(settings, pm) as backend:
            app.state.backend = backend
            pm.hook.startup(settings=settings)
            try:
                yield
            finally:
                pm.hook.shutdown(settings=settings)
                app.state.backend = None

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
    return Litestar(
        route_handlers=[api],
        lifespan=[lifespan],
        dependencies=dependencies(state),
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=require_json_body,
        before_send=[add_request_id],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        state=state,
        debug=False,
    )


def _initial_state(settings: Settings, pm: pluggy.PluginManager) -> State:
    return State({"settings": settings, "plugin_manager": pm, "backend": None})
