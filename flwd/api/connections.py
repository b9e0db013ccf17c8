"""Connection guards below ASGI: a cap on open connections and a request-head timeout.

uvicorn has neither in the form flwd needs: `limit_concurrency` answers plain text and
counts SSE followers with everything else, and nothing bounds how long a client may take
to send a request's head (a "slow loris" holds a connection, and a descriptor, forever by
sending a byte now and then). uvicorn accepts any `asyncio.Protocol` class as its `http`
setting, so `guarded_protocol()` builds one that wraps uvicorn's own protocol by
composition: it forwards the public `asyncio.Protocol` calls and overrides nothing of
uvicorn's.

- **Connection caps.** A request that is not an event stream, arriving while more than
  `max_connections` connections are open that do not carry a stream, is answered
  `503 too-many-connections` (by `flwd.api.guards`, which knows a stream when it sees
  one; streams have their own cap there). Here, below the application, the total is
  bounded: a connection accepted while `max_connections + max_streams` are open is
  answered the same way once its request head has arrived, and closed; it never reaches
  the application. So a burst of followers connecting at once is not refused for the
  moment they are not yet known to be streams, and a flood of connections cannot take
  every descriptor.
- **Head timeout.** From the moment a connection is accepted, and from the first byte of
  each later request on it, the request head (request line and headers, up to the empty
  line) must arrive within `header_timeout` seconds; otherwise the client gets
  `408 request-timeout` and the connection is closed. The end of a request is reported by
  the ASGI side (`request_finished`), through the context variable `CURRENT`: asyncio
  copies the context into the task uvicorn starts for a request from `data_received`.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from flwd.api.problems import problem_body

log = logging.getLogger("flwd.connections")

#: Where a request's head ends; a request head is never shorter than this.
_HEAD_END = b"\r\n\r\n"
#: A refused connection's request head is read up to this size, then answered anyway.
_REFUSED_HEAD_LIMIT = 16 * 1024
#: How long a refused connection is kept to let the client read the answer.
_LINGER = 2.0


class ConnectionBook:
    """The open connections of one server and how many of them carry a stream."""

    def __init__(self, *, max_connections: int, max_streams: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.max_total = max_connections + max_streams
        self.header_timeout = header_timeout
        self.open: set[GuardedConnection] = set()
        self.streaming = 0

    def full(self) -> bool:
        """No room for one more connection of any kind."""
        return len(self.open) >= self.max_total

    def over_request_cap(self) -> bool:
        """More connections without a stream are open than `max_connections`."""
        return len(self.open) - self.streaming > self.max_connections


#: The connection the current request arrived on (None outside `flwd serve`, e.g. tests
#: driving the app in-process).
CURRENT: contextvars.ContextVar[GuardedConnection | None] = contextvars.ContextVar(
    "flwd_connection", default=None
)


def _response(status: int, slug: str, detail: str, instance: str, retry_after: int | None) -> bytes:
    body = problem_body(slug, detail, instance=instance, retry_after=retry_after)
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _request_path(head: bytes) -> str:
    """The path of a request line (`GET /api/v1/runs?x HTTP/1.1`), or `/`."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) == 3 and parts[1].startswith(b"/"):
        return parts[1].split(b"?", 1)[0].decode("latin-1")[:200]
    return "/"


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: uvicorn's protocol inside, the two guards around it."""

    def __init__(self, book: ConnectionBook, inner: asyncio.Protocol) -> None:
        self.book = book
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.refused = False
        self.answered = False
        self.streaming = False
        self.awaiting_head = True
        self.head = b""  # the last bytes of an unfinished head (a refused one: all of it)
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._arm()
        if self.book.full():
            self.refused = True
            return
        self.book.open.add(self)
        token = CURRENT.set(self)
        try:
            self.inner.connection_made(JoinedWrites(transport))
        finally:
            CURRENT.reset(token)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._refused_data(data)
            return
        if self.awaiting_head:
            self._watch_head(data)
        token = CURRENT.set(self)
        try:
            self.inner.data_received(data)
        finally:
            CURRENT.reset(token)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None  # close
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.refused:
            return
        self.book.open.discard(self)
        self.set_streaming(False)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # Called from the ASGI side (flwd.api.guards), in the request's task.
    def request_finished(self) -> None:
        """The response is complete: the next bytes are a new request's head."""
        self.awaiting_head = True
        self.head = b""
        self._disarm()

    def set_streaming(self, streaming: bool) -> None:
        if streaming != self.streaming:
            self.streaming = streaming
            self.book.streaming += 1 if streaming else -1

    # The head timeout
    def _watch_head(self, data: bytes) -> None:
        seen = self.head + data  # `head` holds at most the 3 bytes before `data`
        if _HEAD_END in seen:
            self.awaiting_head = False
            self.head = b""
            self._disarm()
            return
        self.head = seen[-3:]
        if self.timer is None:  # the first bytes of a head that did not come whole
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.book.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        log.warning(
            "closed a connection from %s: no complete request head within %gs",
            self.peer,
            self.book.header_timeout,
        )
        detail = f"The request head did not arrive within {self.book.header_timeout:g}s"
        self.transport.write(_response(408, "request-timeout", detail, "/", None))
        self.transport.close()

    # A refused connection: read its head, answer 503, close.
    def _refused_data(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing() or self.answered:
            return
        self.head += data
        if _HEAD_END not in self.head and len(self.head) < _REFUSED_HEAD_LIMIT:
            return
        self._disarm()
        self.answered = True
        path = _request_path(self.head)
        log.warning(
            "refused a connection from %s: %d connections are open (max_connections + max_streams)",
            self.peer,
            self.book.max_total,
        )
        detail = f"The server has {self.book.max_total} connections open, its limit; retry later"
        self.transport.write(_response(503, "too-many-connections", detail, path, 1))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.head = b""
        # Closing with unread request bytes would reset the connection before the client
        # reads the answer: keep reading (and dropping) them for a moment first.
        asyncio.get_running_loop().call_later(_LINGER, self.transport.close)


class JoinedWrites(asyncio.Transport):
    """The transport uvicorn's protocol is given: writes made in one pass of the event
    loop go to the socket as one `send`, at the end of that pass.

    uvicorn writes a response's head as soon as the application starts it, and its body
    with a second call; on loopback each `send` also does the receiver's part of TCP and
    wakes it, 0.1-0.2 ms of the server's CPU on this machine, twice per answer. Joined,
    a small answer is one `send` and reaches the client in one piece. Everything else
    (closing, flow control, extra info) is the socket transport's own; closing or ending
    the stream sends what is waiting first."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self.transport = transport
        self.waiting: list[bytes] = []
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self.waiting:
            asyncio.get_running_loop().call_soon(self.flush)
        self.waiting.append(bytes(data))
        self.size += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if not self.waiting:
            return
        waiting, self.waiting, self.size = self.waiting, [], 0
        if not self.transport.is_closing():
            self.transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def abort(self) -> None:
        self.waiting, self.size = [], 0
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.size + self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()


def guarded_protocol(book: ConnectionBook) -> type[asyncio.Protocol]:
    """A protocol class for uvicorn's `http` setting: uvicorn's own (httptools when
    installed, else h11) wrapped in a `GuardedConnection` registered in `book`."""

    class GuardedHTTP(GuardedConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(book, AutoHTTPProtocol(**kwargs))

    return GuardedHTTP
