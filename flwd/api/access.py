"""Access control in the core, the same for every route and every mounted app, with no
knowledge of how callers are identified: the plugins decide (`flwd.access`).

`AccessControl` is an ASGI middleware around every route handler of the app (the API,
the docs, whatever an extension mounts). For each request it

1. reads the route's action from its handler's `opt["action"]` (one of
   `flwd.access.ACTIONS`, or `OPEN` for the few routes anyone may call: health,
   readiness, `GET /`, the docs page and the OpenAPI document, and the `OPTIONS`
   answers Litestar adds). A route that declares nothing is treated as `administer`, so
   a forgotten declaration fails closed;
2. asks the plugins who the caller is (`actor_from_request`, awaited when it returns an
   awaitable; `flwd.errors.Unauthorized` is a 401 `unauthorized` with
   `WWW-Authenticate: Bearer`) and keeps the answer in the request's scope, where
   handlers read it with `actor_of(connection)`;
3. asks whether that actor may perform the action at all (`permission_allowed` with the
   `SYSTEM` resource): `False` is a 403 `permission-denied`.

Handlers then check the specific job or run once they know it (`require`,
`visible_run`), and apply the actor's confinement to what they list (see `confinement`).

When no plugin identifies callers, step 2 is skipped without a hook call, and when no
plugin but the built-in default (allow) decides permissions, step 3 and the handlers'
checks are too: with no access plugin the middleware costs one dictionary lookup per
request.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Final, cast

import pluggy
from litestar import Request, WebSocket
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from flwd.access import ADMINISTER, SYSTEM, Actor, Resource
from flwd.api.problems import problem_response
from flwd.defaults import PLUGIN_NAME as DEFAULTS
from flwd.errors import PermissionDenied, RunNotFound, Unauthorized
from flwd.models import Run

log = logging.getLogger("flwd.access")

#: The key of a route handler's `opt` that names its action.
ACTION_KEY: Final = "action"
#: The `opt["action"]` of the routes anyone may call (no identification, no permission).
OPEN: Final = "open"
_ACTOR_KEY: Final = "flwd.actor"
_PM_KEY: Final = "flwd.plugin_manager"


def route_action(action: str) -> dict[str, Any]:
    """The `opt` of a route handler whose action is `action` (or `OPEN`):
    `@get(..., opt=route_action(VIEW_RUNS))`."""
    return {ACTION_KEY: action}


def action_of(handler: Any) -> str:
    """The action a route handler declares; `OPEN` for the `OPTIONS` handlers Litestar
    adds by itself (they answer only the `Allow` header); `ADMINISTER` when a handler
    declares nothing, so a forgotten declaration fails closed."""
    action = handler.opt.get(ACTION_KEY)
    if action is None:
        return OPEN if getattr(handler, "http_methods", None) == {"OPTIONS"} else ADMINISTER
    return cast(str, action)


def _state(connection: ASGIConnection[Any, Any, Any, Any] | Scope) -> dict[str, Any]:
    scope = connection if isinstance(connection, dict) else connection.scope
    return cast(dict[str, Any], cast(dict[str, Any], scope).setdefault("state", {}))


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    """The actor `actor_from_request` named for this request (`None`: anonymous)."""
    actor = _state(connection).get(_ACTOR_KEY)
    return actor if isinstance(actor, Actor) else None


def allowed(
    connection: ASGIConnection[Any, Any, Any, Any], action: str, resource: Resource
) -> bool:
    """Whether the plugins let this request's actor perform `action` on `resource`."""
    pm = _state(connection).get(_PM_KEY)
    if not isinstance(pm, pluggy.PluginManager):
        return True  # only the built-in default decides (or not behind `AccessControl`)
    answer = pm.hook.permission_allowed(
        actor=actor_of(connection), action=action, resource=resource
    )
    return answer is not False


def require(
    connection: ASGIConnection[Any, Any, Any, Any], action: str, resource: Resource
) -> None:
    """Raise `PermissionDenied` unless the actor may perform `action` on `resource`."""
    if not allowed(connection, action, resource):
        raise PermissionDenied(f"Not allowed to {action} on this {resource.kind}")


def sees_run(actor: Actor | None, run: Run) -> bool:
    """Whether the actor's confinement (tenant, job patterns) lets it see this run."""
    return actor is None or (actor.sees_tenant(run.tenant) and actor.sees_job(run.job_id))


def confined(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    """The keyword arguments that confine a listing (`list_runs`, `list_artifacts`) to
    what the request's actor sees; none for an actor that is not confined."""
    actor = actor_of(connection)
    if actor is None or (actor.tenant is None and actor.job_patterns is None):
        return {}
    return {"confined_tenant": actor.tenant, "job_patterns": actor.job_patterns}


def run_resource(run: Run) -> Resource:
    return Resource(kind="run", run_id=run.run_id, job_id=run.job_id, tenant=run.tenant)


def visible_run(connection: ASGIConnection[Any, Any, Any, Any], run: Run, action: str) -> Run:
    """`run` if the actor sees it and may perform `action` on it. A run outside the
    actor's confinement is `RunNotFound`, exactly like a missing one; a run it sees but
    may not act on is `PermissionDenied`."""
    if not sees_run(actor_of(connection), run):
        raise RunNotFound(run.run_id)
    require(connection, action, run_resource(run))
    return run


def run_tenant(connection: ASGIConnection[Any, Any, Any, Any], asked: str | None) -> str:
    """The tenant of a new run: the actor's own when it is confined to one (asking for
    another is `PermissionDenied`), else the one asked for, else `default`."""
    actor = actor_of(connection)
    if actor is None or actor.tenant is None:
        return asked or "default"
    if asked is not None and asked != actor.tenant:
        raise PermissionDenied(
            f"Runs of tenant '{asked}' cannot be created by a caller of tenant '{actor.tenant}'"
        )
    return actor.tenant


class AccessControl(ASGIMiddleware):
    """Steps 1-3 of the module docstring, around every HTTP and WebSocket route."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.identify = identifies_callers(pm)
        # only the built-in default (allow) answers: no hook call per request or resource
        self.decide = any(
            impl.plugin_name != DEFAULTS for impl in pm.hook.permission_allowed.get_hookimpls()
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        action = action_of(scope["route_handler"])
        if action == OPEN:
            await next_app(scope, receive, send)
            return
        if not (self.identify or self.decide):
            await next_app(scope, receive, send)
            return
        state = _state(scope)
        if self.decide:
            state[_PM_KEY] = self.pm
        actor: Any = None
        try:
            if self.identify:
                connection: ASGIConnection[Any, Any, Any, Any] = (
                    Request(scope, receive)
                    if scope["type"] == ScopeType.HTTP
                    else WebSocket(scope, receive, send)
                )
                actor = self.pm.hook.actor_from_request(connection=connection)
                if inspect.isawaitable(actor):
                    actor = await actor
                if actor is not None and not isinstance(actor, Actor):
                    log.error("actor_from_request returned %r, not an Actor", type(actor))
                    raise Unauthorized("The caller could not be identified")
                state[_ACTOR_KEY] = actor
            if self.decide:
                answer = self.pm.hook.permission_allowed(
                    actor=actor, action=action, resource=SYSTEM
                )
                if answer is False:
                    raise PermissionDenied(f"Not allowed to {action}")
        except (Unauthorized, PermissionDenied) as exc:
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
            request: Request[Any, Any, Any] = Request(scope, receive)
            response = problem_response(request, exc.slug, exc.detail, headers=headers)
            if scope["type"] == ScopeType.HTTP:
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)
            else:  # a WebSocket refused before it is accepted
                await send({"type": "websocket.close", "code": 1008, "reason": exc.slug})
            return
        await next_app(scope, receive, send)


def identifies_callers(pm: pluggy.PluginManager) -> bool:
    """Whether some plugin implements `actor_from_request` (else every caller is
    anonymous and, unless a plugin decides otherwise, may do anything)."""
    return bool(pm.hook.actor_from_request.get_hookimpls())
