"""Keeping the app's streams alive: each stream is re-opened after any failure, from the
last event id it delivered, for as long as the app runs; each failure and recovery is told
to the app for its status line.

`FlwdClient` already resumes a dropped stream a few times by itself; past that it raises,
and `keep_streaming` takes over with the same resume point, so a server that is down for
minutes (or refuses the token until it is fixed) costs no event it still holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from flwd.client import ClientError
from flwd.errors import FlwdError

_Item = TypeVar("_Item")

#: Seconds between attempts to reach the server again: grows to `MAX_RETRY_DELAY`.
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 5.0
#: Client errors worth retrying: a token that may be fixed, a timeout, a rate limit.
RETRIED = frozenset({401, 403, 408, 429})


def describe_failure(exc: FlwdError) -> str:
    """The status line's words for a failed request or stream."""
    if exc.status in (401, 403):
        return f"the server refuses the token ({exc.status}): {exc.detail}"
    if isinstance(exc, ClientError) and exc.status == 0:
        return f"server unreachable, reconnecting: {exc.detail}"
    return f"server error ({exc.status}), retrying: {exc.detail}"


class StreamKeeper(Generic[_Item]):
    """Re-opens one stream forever, resuming after the last id seen.

    `open_stream(since)` opens the stream after event id `since` (None: from now);
    `item_id(item)` gives an item's event id (None when it has none); `deliver(item)` is
    called for each item; `report(ok, detail)` for the status line, once per change;
    `on_connect()` each time the stream delivers its first item after a failure (or
    right after opening, for streams that may stay silent: see `open_check`)."""

    def __init__(
        self,
        open_stream: Callable[[int | None], AsyncIterator[_Item]],
        item_id: Callable[[_Item], int | None],
        deliver: Callable[[_Item], None],
        report: Callable[[bool, str], None],
        *,
        since: int | None = None,
        open_check: Callable[[], Awaitable[object]] | None = None,
        on_connect: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self.open_stream = open_stream
        self.item_id = item_id
        self.deliver = deliver
        self.report = report
        self.last_id = since
        self.open_check = open_check
        self.on_connect = on_connect
        self.failed = True  # until the first answer: the status line says "connecting"

    async def _connected(self) -> None:
        if self.failed:
            self.failed = False
            self.report(True, "connected")
        if self.on_connect is not None:
            result = self.on_connect()
            if result is not None:
                await result

    async def run(self, *, until_end: bool = False) -> None:
        """Stream until cancelled (or, with `until_end`, until the stream ends by itself:
        a finished run's events or logs)."""
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                if self.open_check is not None:
                    await self.open_check()  # a silent stream still proves the server up
                    await self._connected()
                    connected = True
                else:
                    connected = False
                async for item in self.open_stream(self.last_id):
                    if not connected:
                        connected = True
                        await self._connected()
                    delay = FIRST_RETRY_DELAY
                    item_id = self.item_id(item)
                    if item_id is not None:
                        self.last_id = item_id
                    self.deliver(item)
                if until_end:
                    return
            except FlwdError as exc:
                if 400 <= exc.status < 500 and exc.status not in RETRIED:
                    return  # the run is gone, say: nothing to wait for (its screen says so)
                self.failed = True
                self.report(False, describe_failure(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
