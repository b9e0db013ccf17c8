"""`HEAD` on every `GET` route: the request is served as a `GET` whose body is dropped.

Litestar answers `HEAD` only on routes that declare it, so the application
(`flwd.app.FlwdApp`) passes a `HEAD` request through `head_as_get` before routing: the
route, its guards and its validation run exactly as for `GET` (a missing run is still a
404), the status and headers (with the `Content-Length` a `GET` would have) go out, the
body does not. An event stream is ended as soon as its headers are sent: its handler sees
the client disconnect at once, so no event is ever read for a `HEAD`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.types import Message, Receive, Scope, Send

ASGICall = Callable[[Scope, Receive, Send], Awaitable[None]]


async def head_as_get(app: ASGICall, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve `scope` (a `HEAD` request) as a `GET` without its body."""
    scope["method"] = "GET"  # type: ignore[typeddict-unknown-key]
    answered = asyncio.Event()

    async def head_receive() -> Any:
        if answered.is_set():
            return {"type": "http.disconnect"}
        # a GET has no body to read; wait for the client or for the answer
        waiter = asyncio.ensure_future(receive())
        done_task = asyncio.ensure_future(answered.wait())
        try:
            done, _ = await asyncio.wait({waiter, done_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done_task.cancel()
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        return {"type": "http.disconnect"}

    async def head_send(message: Message) -> None:
        if answered.is_set():
            return  # the rest of a GET's body (or of a stream)
        if message["type"] == "http.response.start":
            await send(message)
            return
        if message["type"] == "http.response.body":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            answered.set()
            return
        await send(message)

    await app(scope, head_receive, head_send)
