"""The extension's ASGI middleware, outermost around every route and mount: it
identifies the caller once (the `Identity` that `actor_from_request` then returns),
counts the request against the profile's rate limit (`X-RateLimit-*` on the answer, a
429 `too-many-requests` with `Retry-After` past it) and writes the audit lines of run
actions (create, cancel, restart) from their answers.

An event stream is one request: it is counted once, when it opens.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from flwd import API_PREFIX
from flwd.api.problems import problem_response
from flwd_security.runtime import IDENTITY_KEY, Security, actor_name

#: Routes anyone may call, never identified nor counted (health probes must not be
#: throttled): those whose handler says `opt["action"] == "open"`, and these paths.
OPEN_PATHS: Final = frozenset({"/", f"{API_PREFIX}/health", f"{API_PREFIX}/ready"})
DOCS_PREFIX: Final = "/api/docs"
#: The audit action of each run-changing operation (by the route's operation id).
RUN_OPERATIONS: Final = {
    "createRun": "run.create",
    "cancelRun": "run.cancel",
    "restartRun": "run.restart",
}


def is_open(scope: Scope) -> bool:
    handler = scope.get("route_handler")
    if handler is not None and handler.opt.get("action") == "open":
        return True
    path = scope["path"]
    return path in OPEN_PATHS or path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/")


class SecurityMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    def __init__(self, security: Security) -> None:
        self.security = security

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if is_open(scope):
            await next_app(scope, receive, send)
            return
        security = self.security
        identity = security.identify(scope)
        scope.setdefault("state", {})[IDENTITY_KEY] = identity
        rate = await security.rate(identity)
        extra: list[tuple[bytes, bytes]] = []
        if rate is not None:
            extra = [
                (b"x-ratelimit-limit", str(rate.limit).encode()),
                (b"x-ratelimit-remaining", str(rate.remaining).encode()),
                (b"x-ratelimit-reset", str(rate.reset).encode()),
            ]
            if not rate.allowed and scope["type"] == ScopeType.HTTP:
                request: Request[Any, Any, Any] = Request(scope, receive)
                who = "this token" if identity.actor is not None else "this address"
                response = problem_response(
                    request,
                    "too-many-requests",
                    f"Rate limit of {rate.limit} requests reached for {who}; retry in "
                    f"{rate.retry_after}s",
                    headers={
                        "Retry-After": str(rate.retry_after),
                        "X-RateLimit-Limit": str(rate.limit),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(rate.reset),
                    },
                    retry_after=rate.retry_after,
                )
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)
                return
        handler = scope.get("route_handler")
        operation = getattr(handler, "operation_id", None)
        audited = RUN_OPERATIONS.get(operation) if isinstance(operation, str) else None
        answer: dict[str, Any] = {}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
                if audited:
                    answer["status"] = message["status"]
                    for name, value in message.get("headers", ()):
                        if name.lower() == b"location":
                            answer["location"] = value.decode("latin-1")
            await send(message)

        await next_app(scope, receive, send_with_headers if extra or audited else send)
        if audited and 200 <= answer.get("status", 0) < 300:
            source = scope.get("path_params", {}).get("run_id")
            target = str(answer.get("location", "")).rpartition("/")[2] or str(source or "")
            detail = f"restart of {source}" if audited == "run.restart" and source else ""
            security.audit(actor_name(identity.actor), audited, target, detail, identity.address)
