"""Request guards: ASGI middleware around the whole app, routing included (`FlwdApp` calls
it before Litestar routes), so every route and mount (the API, the docs and anything an
extension mounts) and every unknown path or method pass them, under every profile.

In the order they apply:

1. **Host.** Bound to a loopback address, the server answers only requests whose `Host`
   names `localhost`, `127.0.0.1` or `[::1]` (any port) or a host given with
   `--allowed-host`; bound elsewhere, only the `--allowed-host` hosts when any are given.
   A page on another site that points its own name at 127.0.0.1 (DNS rebinding) is
   refused with `400 host-not-allowed`.
2. **CORS.** No CORS header at all unless the request's `Origin` is one configured with
   `--cors-origin`; preflights of those origins are answered here.
3. **Body.** A request with a body must say `Content-Type: application/json` (or
   `+json`): a page can send a body without Content-Type, or as text/plain, to any
   address without a preflight; both are `415 unsupported-media-type`. A JSON body nested
   deeper than `MAX_JSON_DEPTH` is `400 malformed-request`, before anything decodes it.
4. **Caps.** Event streams (`Accept: text/event-stream`, or a stream route) are counted
   apart from other connections (`flwd.api.connections`); past `max_streams` a new one is
   `503 too-many-streams`, and a plain request while more than `max_connections`
   connections without a stream are open is `503 too-many-connections` (and its
   connection closed), both with `Retry-After`.

A refusal is one short warning line in the log (`flwd.guards`), rate-limited like every
repeated line (`flwd.logthrottle`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Any, cast

from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from flwd.api import connections
from flwd.api.problems import problem_response
from flwd.settings import Settings

log = logging.getLogger("flwd.guards")

#: Deepest nesting of arrays and objects accepted in a JSON body (documented in limits.md).
MAX_JSON_DEPTH = 64
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Methods whose body is read; their body must be JSON.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STREAM_PATH = re.compile(r"^/api/v1/(?:events/.*|runs/[^/]+/events)$")
_LOGS_PATH = re.compile(r"^/api/v1/runs/[^/]+/logs$")
_FOLLOW = re.compile(rb"(?:^|&)follow=(?:true|1|yes|on)(?:&|$)", re.IGNORECASE)
_BRACKET_RUN = re.compile(rb"\[+|\]+")
_OPEN = ord("[")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-ID"
_CORS_EXPOSE = (
    "Link, Location, Retry-After, X-Request-ID, X-Total-Count, X-Limit, X-Offset, "
    "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a `Host` header without its port, lower-cased (`[::1]` keeps brackets)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


class HostPolicy:
    """Which `Host` headers are answered (see the module docstring)."""

    def __init__(self, bind_host: str, allowed: Iterable[str]) -> None:
        extra = {host_name(h) for h in allowed}
        local = is_loopback(bind_host)
        self.allowed = extra | (LOOPBACK_NAMES if local else frozenset())
        self.enforced = local or bool(extra)

    def allows(self, header: str | None) -> bool:
        if not self.enforced:
            return True
        return header is not None and host_name(header) in self.allowed


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects in `body` nest deeper than `limit`, without decoding it
    (msgspec itself recurses, and fails past ~1,000 levels with a RecursionError).

    Escapes and then strings are dropped (they may hold brackets), the rest is reduced to
    its brackets, and passes remove the innermost pairs while that halves what is left
    (each pass lowers the deepest point by one); the depth of the rest is then followed
    run by run. All but the last loop run in C, and that loop sees few runs: ~10-40 ms
    for the worst 1 MiB body on this machine, nothing for a body with few brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_BRACKETS, _NOT_BRACKET)
    passes = 0
    while brackets:
        shorter = brackets.replace(b"[]", b"")
        passes += 1
        slow = len(shorter) * 2 > len(brackets)
        brackets = shorter
        if slow:
            break
    depth = passes  # what the passes took off the deepest point
    if depth > limit:
        return True
    for run in _BRACKET_RUN.finditer(brackets):
        if brackets[run.start()] == _OPEN:
            depth += run.end() - run.start()
            if depth > limit:
                return True
        else:
            depth -= run.end() - run.start()
    return False


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def is_stream(scope: Scope, headers: dict[str, str]) -> bool:
    """An event stream: asked for by `Accept`, or one of the stream routes."""
    if "text/event-stream" in headers.get("accept", ""):
        return True
    path = scope["path"]
    if _STREAM_PATH.match(path):
        return True
    return bool(_LOGS_PATH.match(path) and _FOLLOW.search(scope.get("query_string", b"")))


class StreamCount:
    """Event streams open at once, server-wide."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class Refused(Exception):
    """A guard's refusal, answered with the problem `slug`."""

    def __init__(self, slug: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.headers = headers


class RequestGuards(ASGIMiddleware):
    """The guards of the module docstring, as one Litestar ASGI middleware."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, settings: Settings) -> None:
        self.hosts = HostPolicy(settings.host, settings.allowed_hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)
        self.max_body = settings.max_body_bytes
        self.streams = StreamCount(settings.max_streams)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = _headers(scope)
        method = cast("HTTPScope", scope)["method"]
        origin = headers.get("origin", "").rstrip("/").lower()
        allowed_origin = origin if origin in self.origins else None
        plain_send = send
        if allowed_origin:
            send = _with_cors(send, allowed_origin)
        try:
            if not self.hosts.allows(headers.get("host")):
                raise Refused(
                    "host-not-allowed",
                    f"Host '{headers.get('host', '')[:100]}' is not served here; "
                    "add it with --allowed-host",
                )
            if (
                allowed_origin
                and method == "OPTIONS"
                and "access-control-request-method" in headers
            ):
                await _preflight(plain_send, allowed_origin)
                return
            if method in _BODY_METHODS and _has_body(headers):
                receive = await self._checked_body(headers, receive)
            if is_stream(scope, headers):
                await self._stream(scope, receive, send, next_app)
                return
            connection = connections.CURRENT.get()
            if connection is not None and connection.book.over_request_cap():
                raise Refused(
                    "too-many-connections",
                    f"The server has {connection.book.max_connections} connections open, "
                    "its limit; retry later",
                    {"Retry-After": "1", "Connection": "close"},
                )
            await next_app(scope, receive, send)
        except Refused as exc:
            # Answered here rather than raised on, so that the refusal of an allowed
            # origin's request carries its CORS headers too.
            client = scope.get("client") or ("?", 0)
            log.warning("refused %s %s from %s: %s", method, scope["path"], client[0], exc.slug)
            request: Request[Any, Any, Any] = Request(scope, receive)
            retry = (exc.headers or {}).get("Retry-After")
            response = problem_response(
                request,
                exc.slug,
                exc.detail,
                headers=exc.headers,
                retry_after=int(retry) if retry else None,
            )
            await response.to_asgi_response(app=None, request=request)(scope, receive, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if self.streams.open >= self.streams.limit:
            raise Refused(
                "too-many-streams",
                f"{self.streams.limit} event streams are open, the server's limit; retry later",
                {"Retry-After": "1"},
            )
        connection = connections.CURRENT.get()
        self.streams.open += 1
        if connection is not None:
            connection.set_streaming(True)
        try:
            await next_app(scope, receive, send)
        finally:
            self.streams.open -= 1
            if connection is not None:
                connection.set_streaming(False)

    async def _checked_body(self, headers: dict[str, str], receive: Receive) -> Receive:
        """The body must be JSON, nested at most `MAX_JSON_DEPTH` deep. It is read here
        (up to the size limit, past which Litestar answers 413) and handed on unread."""
        content_type = headers.get("content-type")
        if not content_type or not _is_json(content_type):
            raise Refused(
                "unsupported-media-type",
                f"Content-Type '{content_type or ''}' is not accepted; send 'application/json'",
                {"Accept-Post": "application/json"},
            )
        chunks: list[bytes] = []
        size = 0
        more = True
        first: list[ReceiveMessage] = []
        while more and size <= self.max_body:
            message = await receive()
            if message["type"] != "http.request":
                first.append(message)
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if size <= self.max_body and json_too_deep(body):
            raise Refused(
                "malformed-request",
                f"The JSON body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
            )
        replay: list[ReceiveMessage] = [{"type": "http.request", "body": body, "more_body": more}]
        replay += first

        async def replayed() -> ReceiveMessage:
            return replay.pop(0) if replay else await receive()

        return replayed


def _has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


async def _preflight(send: Send, origin: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-methods", _CORS_METHODS.encode()),
                (b"access-control-allow-headers", _CORS_HEADERS.encode()),
                (b"access-control-max-age", b"600"),
                (b"vary", b"Origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _with_cors(send: Send, origin: str) -> Send:
    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-expose-headers", _CORS_EXPOSE.encode()),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return cors_send


async def track_response(message: Message, scope: Scope) -> None:
    """Send hook (`flwd.app.FlwdApp` runs it for every response, unknown routes and
    refusals included): when a
    response is complete, its connection waits for a new request head again."""
    if message["type"] == "http.response.body" and not message.get("more_body", False):
        connection = connections.CURRENT.get()
        if connection is not None:
            connection.request_finished()


def guard_middleware(settings: Settings) -> list[Any]:
    return [RequestGuards(settings)]
