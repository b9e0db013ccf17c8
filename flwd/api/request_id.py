"""`X-Request-ID`: echo the caller's id (or make one) on every response, errors included.

The id lives in the ASGI scope so the problem body, the server log and the response header
agree. It is set by a send hook that `flwd.app.FlwdApp` puts around every response, the
guards' refusals and unknown routes included.
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
_SCOPE_KEY = "flwd.request_id"
# Generated ids: a random prefix per server process and a counter, 32 hex digits like a
# UUID. Unique within the process and unguessable across processes, without the
# `os.urandom` system call per request that `uuid4()` makes.
_PREFIX = secrets.token_hex(8)
_counter = itertools.count(1)
# Only echo ids that are safe in a header and a log line; anything else is replaced.
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id(scope: Scope | dict[str, Any]) -> str:
    """The request's id: the caller's `X-Request-ID` when acceptable, else a new one."""
    current = scope.get(_SCOPE_KEY)
    if isinstance(current, str):
        return current
    rid = ""
    for name, value in scope.get("headers", ()):
        if name == _HEADER_BYTES:
            rid = value.decode("latin-1")
            break
    if not rid or not _ACCEPTABLE.match(rid):
        rid = f"{_PREFIX}{next(_counter):016x}"
    scope[_SCOPE_KEY] = rid  # type: ignore[literal-required]
    return rid


async def add_request_id(message: Message, scope: Scope) -> None:
    """`before_send` hook: put `X-Request-ID` on the response start."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        headers[HEADER] = request_id(scope)
