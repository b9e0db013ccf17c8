"""Server-Sent Events framing: the only module that imports sse-starlette.

Frames carry the journal's global event id as the SSE `id:`, so a client that reconnects
with `Last-Event-ID` (or `?since=`) resumes exactly after the last event it saw. `data:` is
one line of msgspec-encoded JSON. Three stream shapes exist:

* run events (`/api/v1/events/runs`, `/api/v1/runs/{id}/events`): `event: <type>` with the
  event's fields and its `data` flattened into one object;
* log lines (`/api/v1/runs/{id}/logs?follow=true`): `event: log` with a log line, then a
  final `event: end` carrying the run's terminal status;
* heartbeats: a `: ping` comment at least every `settings.heartbeat` seconds, so proxies
  keep the connection open and clients notice a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import msgspec
from litestar import Request, Response
from litestar.response.base import ASGIResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from flwd.events.bus import SlowConsumer
from flwd.models import Event, LogLine

log = logging.getLogger("flwd.sse")

RUN_OUTPUT = "run.output"
RUN_FINISHED = "run.finished"
_BASE_FIELDS = ("id", "type", "run_id", "job_id", "timestamp")
_encoder = msgspec.json.Encoder()

#: How long (ms) a client should wait before reconnecting after the stream drops.
RETRY_MS = 1000
#: Seconds an overflowed stream gets to end cleanly before it is cut off mid-send.
CUT_GRACE = 1.0

__all__ = [
    "SSEStream",
    "end_frame",
    "event_bytes",
    "event_chunks",
    "event_frame",
    "event_payload",
    "log_bytes",
    "log_frame",
    "log_line",
    "no_events",
    "parse_resume_id",
    "sse_response",
]


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON object sent for a run event: its envelope plus its data, flattened."""
    payload: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "run_id": event.run_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
    }
    for key, value in event.data.items():
        if key not in _BASE_FIELDS:  # the envelope wins: ids must stay trustworthy
            payload[key] = value
    return payload


def _frame(event: str, data: Any, event_id: int | None) -> ServerSentEvent:
    return ServerSentEvent(
        data=_encoder.encode(data).decode(),
        event=event,
        id=None if event_id is None else str(event_id),
        sep="\n",
    )


def event_frame(event: Event) -> ServerSentEvent:
    """`id: <event id>`, `event: <type>`, `data: {...}`."""
    return _frame(event.type, event_payload(event), event.id)


def log_line(event: Event) -> LogLine:
    """The log line a `run.output` event stands for."""
    data = event.data
    return LogLine(
        id=event.id,
        timestamp=event.timestamp,
        level=str(data.get("level", "info")),
        message=str(data.get("message", "")),
        step_id=data.get("step_id"),
    )


def log_frame(line: LogLine) -> ServerSentEvent:
    """`id: <event id>`, `event: log`, `data: {"id","timestamp","level","message","step_id"}`."""
    return _frame("log", line, line.id)


def end_frame(run_id: str, status: str, event_id: int | None) -> ServerSentEvent:
    """`event: end`: the last frame of a log stream, once the run is terminal."""
    return _frame("end", {"run_id": run_id, "status": status}, event_id)


class _FrameCache:
    """Encoded frames by (kind, event id). With many followers of one run every event is
    encoded once instead of once per subscriber; event ids are global, so keys never
    clash. Bounded in entries and in bytes (a frame can hold a 16 KiB line): old entries
    are dropped first."""

    def __init__(self, size: int = 4096, max_bytes: int = 8 * 2**20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._frames: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def get(
        self, kind: str, event: Event, encode: Callable[[Event], bytes | ServerSentEvent]
    ) -> bytes:
        key = (kind, event.id)
        frame = self._frames.get(key)
        if frame is None:
            encoded = encode(event)
            frame = encoded if isinstance(encoded, bytes) else encoded.encode()
            self._frames[key] = frame
            self.bytes += len(frame)
            while len(self._frames) > self.size or self.bytes > self.max_bytes:
                self.bytes -= len(self._frames.popitem(last=False)[1])
        return frame


_cache = _FrameCache()


def _frame_bytes(event: bytes, data: Any, event_id: int) -> bytes:
    """What `_frame(...).encode()` gives, about five times faster (what a replay of a
    long log spends its time on): `data` is one line of JSON, `event` a plain name."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event, _encoder.encode(data))


def event_bytes(event: Event) -> bytes:
    """`event_frame(event)`, encoded (and shared between subscribers)."""
    return _cache.get(
        "event", event, lambda e: _frame_bytes(e.type.encode(), event_payload(e), e.id)
    )


def log_bytes(event: Event) -> bytes:
    """The `event: log` frame of a `run.output` event, encoded (and shared)."""
    return _cache.get("log", event, lambda e: _frame_bytes(b"log", log_line(e), e.id))


def parse_resume_id(last_event_id: str | None, since: str | int | None) -> int | None:
    """Where to resume: `Last-Event-ID` (what a reconnecting EventSource sends) wins over
    `?since=`. Returns None when neither is given; raises ValueError when not an integer."""
    for value in (last_event_id, since):
        if value is None or value == "":
            continue
        number = int(value)
        if number < 0:
            raise ValueError("an event id is never negative")
        return number
    return None


#: A batch is written in one send, split only past this size (a long replay). Small
#: enough that a stream blocked on a client that does not read holds little: the chunk
#: being sent sits in the server's write buffer until the client takes it.
MAX_CHUNK = 64 * 1024

Render = Callable[[Event], bytes | ServerSentEvent | None]


def _chunk_frames(frames: Iterable[bytes | ServerSentEvent]) -> Iterator[bytes]:
    parts: list[bytes] = []
    size = 0
    for frame in frames:
        data = frame if isinstance(frame, bytes) else frame.encode()
        parts.append(data)
        size += len(data)
        if size >= MAX_CHUNK:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if parts:
        yield b"".join(parts)


class _Ended:
    """How `event_chunks` ended: `quietly` when its batches simply ran out."""

    quietly = False


async def event_chunks(
    batches: AsyncIterator[list[Event]],
    render: Render,
    stop: Callable[[Event], bool],
    ended: _Ended | None = None,
    cut: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """The response body: one chunk per batch of events (split only past `MAX_CHUNK`, at a
    frame boundary), so a follower that fell behind catches up with one send, not one per
    event; ends after the first event for which `stop` is true, or quietly when the feed
    fails or cuts a slow subscriber off (the client resumes from its last id)."""
    try:
        async for batch in batches:
            end = next((i + 1 for i, event in enumerate(batch) if stop(event)), None)
            # Rendered lazily: at most one chunk of a long batch is held in memory.
            frames = (frame for frame in map(render, batch[:end]) if frame is not None)
            for i, chunk in enumerate(_chunk_frames(frames)):
                if i:
                    # A send that fits in the socket's buffers does not wait: let other
                    # requests run between the chunks of a long batch.
                    await asyncio.sleep(0)
                yield chunk
                if cut is not None and cut.is_set():  # overflowed: the rest is not sent
                    raise SlowConsumer("subscriber fell too far behind")
            if end is not None:
                break
        else:
            if ended is not None:
                ended.quietly = True
    except SlowConsumer:
        # A subscriber that fell too far behind is cut off rather than buffered without
        # bound; it reconnects with its Last-Event-ID and loses nothing.
        log.info("disconnected a slow event stream subscriber; it will resume")
    except Exception:
        # Headers are already sent, so no problem document is possible: end the stream
        # (the client resumes from its last id) and keep the traceback server side.
        log.exception("event stream failed")
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class _CutOff:
    """The ASGI app of one stream: sse-starlette's `EventSourceResponse` (heartbeats,
    disconnect detection, drain on shutdown, `send_timeout`), cut off when a send does not
    finish within the send timeout (`SendTimeoutError`) or when `cut` is set (the stream's
    subscription overflowed) and the stream has not ended by itself `CUT_GRACE` seconds
    later (its send is blocked on a client that does not read).

    A cut stream stops at once and lets go of what it held; the socket is then given
    up to `linger` seconds to be aborted by the kernel (`flwd serve` sets
    `TCP_USER_TIMEOUT` to the send timeout, which resets a connection whose peer has not
    taken data for that long, freeing its socket buffers) before the response ends
    anyway. The client resumes from its last id."""

    def __init__(
        self, response: EventSourceResponse, cut: asyncio.Event | None, send_timeout: float
    ) -> None:
        self.response = response
        self.cut = cut
        self.grace = min(CUT_GRACE, send_timeout)
        self.linger = send_timeout + 1.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self.response(scope, receive, send))
        cut_off = asyncio.ensure_future(self.cut.wait()) if self.cut is not None else None
        try:
            await asyncio.wait(
                [streaming] if cut_off is None else [streaming, cut_off],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not streaming.done():
                # Overflowed: a stream whose client still reads ends by itself as soon as
                # its send returns (the feed raises SlowConsumer, the body ends cleanly).
                await asyncio.wait([streaming], timeout=self.grace)
        finally:
            if cut_off is not None:
                cut_off.cancel()
            if not streaming.done():
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
        if streaming.cancelled():
            log.info("cut off a slow event stream subscriber; it will resume")
        else:
            error = streaming.exception()
            if error is None:
                return
            if not isinstance(error, SendTimeoutError):
                raise error
            log.info("cut off an event stream client that stopped reading; it will resume")
            del error
        # The task's exception holds the frames of the stream (and what they held):
        # let them go before lingering.
        del streaming
        await _until_disconnected(receive, self.linger)


async def _until_disconnected(receive: Receive, linger: float) -> None:
    """Wait (at most `linger` seconds) for the server to report the connection gone."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(linger):
            while (await receive())["type"] != "http.disconnect":
                pass


class SSEStream(Response[None]):
    """A Litestar response that hands the connection to sse-starlette's
    `EventSourceResponse` (through `_CutOff`)."""

    def __init__(self, stream: _CutOff) -> None:
        super().__init__(content=None, media_type="text/event-stream")
        self.stream = stream

    def to_asgi_response(
        self, app: Any, request: Request[Any, Any, Any], **kwargs: Any
    ) -> ASGIResponse:
        # Litestar only needs an ASGI callable here.
        return cast(ASGIResponse, self.stream)


# A retry hint first: browsers otherwise wait ~3 s before resuming.
_RETRY = ServerSentEvent(retry=RETRY_MS, comment="flwd event stream", sep="\n").encode()


def sse_response(
    batches: AsyncIterator[list[Event]],
    *,
    heartbeat: float,
    send_timeout: float,
    render: Render = event_bytes,
    stop: Callable[[Event], bool] = lambda event: False,
    prelude: list[ServerSentEvent] | None = None,
    epilogue: list[ServerSentEvent] | None = None,
    headers: Mapping[str, str] | None = None,
    cut: asyncio.Event | None = None,
) -> SSEStream:
    """An SSE response streaming batches of events as rendered frames until `stop(event)`;
    `prelude` frames go first, `epilogue` frames last when the batches ran out without a
    `stop` event. A send (of data or of a heartbeat) that does not finish within
    `send_timeout` seconds, or `cut` being set, ends the stream at once (see `_CutOff`)."""

    async def content() -> AsyncIterator[bytes]:
        yield _RETRY
        for chunk in _chunk_frames(prelude or ()):
            yield chunk
        ended = _Ended()
        async for chunk in event_chunks(batches, render, stop, ended, cut):
            yield chunk
        if epilogue and ended.quietly:
            for chunk in _chunk_frames(epilogue):
                yield chunk

    response = EventSourceResponse(
        content(),
        ping=heartbeat,
        sep="\n",
        send_timeout=send_timeout,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )
    return SSEStream(_CutOff(response, cut, send_timeout))


async def no_events() -> AsyncIterator[list[Event]]:
    """An event source that is already exhausted, for streams made only of `prelude`."""
    nothing: tuple[list[Event], ...] = ()
    for batch in nothing:
        yield batch
