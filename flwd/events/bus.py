"""In-memory fan-out of committed journal records to any number of subscribers.

A subscriber that falls more than `maxsize` records behind is cut off (`SlowConsumer`)
instead of making the server drop events for others or grow without bound; it resumes
from the last id it saw, which the journal can always replay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from flwd.events.records import Record


class SlowConsumer(Exception):
    """The subscriber could not keep up and was disconnected; resume from its last id."""


class Subscription:
    def __init__(self, bus: EventBus, run_id: str | None, job_id: str | None, maxsize: int) -> None:
        self._bus = bus
        self.run_id = run_id
        self.job_id = job_id
        self.maxsize = maxsize
        self._queue: deque[Record] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def _offer(self, records: Iterable[Record]) -> None:
        for record in records:
            if self.run_id is not None and record.run_id != self.run_id:
                continue
            if self.job_id is not None and record.job_id != self.job_id:
                continue
            if len(self._queue) >= self.maxsize:
                self.overflowed = True
                self._queue.clear()
                self._bus.unsubscribe(self)
                break
            self._queue.append(record)
        if self._queue or self.overflowed:
            self._ready.set()

    async def get(self, poll: float | None = None) -> Record | None:
        """The next record, or None when `poll` seconds pass first."""
        while not self._queue:
            if self.overflowed:
                raise SlowConsumer("subscriber fell too far behind")
            self._ready.clear()
            try:
                async with asyncio.timeout(poll):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._queue.popleft()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._subscribers: set[Subscription] = set()

    def subscribe(
        self, *, run_id: str | None = None, job_id: str | None = None, maxsize: int | None = None
    ) -> Subscription:
        sub = Subscription(self, run_id, job_id, maxsize or self.maxsize)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, records: list[Record]) -> None:
        for sub in list(self._subscribers):
            sub._offer(records)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
