"""In-memory fan-out of committed journal records to any number of subscribers.

A subscriber that falls more than `maxsize` records (or `maxbytes` of output text) behind
is cut off (`SlowConsumer`) instead of making the server drop events for others or grow
without bound; it resumes from the last id it saw, which the journal can always replay.
The byte bound matters for output: one record is a chunk of up to 64 KiB of lines.

Publishing is cheap per subscriber because hundreds may follow one run: subscribers are
indexed by the run they follow, a publish appends to their queues and resolves at most one
waiting future each, and a subscriber that wakes up takes everything queued at once
(`take`), so a reader that lags pays one wake-up for many records, not one per record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from flwd.events.records import Record


class SlowConsumer(Exception):
    """The subscriber could not keep up and was disconnected; resume from its last id."""


def _size(record: Record) -> int:
    """Roughly what holding `record` costs: its output text plus a fixed overhead."""
    return 256 + (len(record.text) if record.text is not None else 0)


class Subscription:
    def __init__(
        self,
        bus: EventBus,
        run_id: str | None,
        job_id: str | None,
        maxsize: int,
        maxbytes: int,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self._bus = bus
        #: Called once when the subscriber is cut off, so a stream blocked on a client
        #: that does not read can be ended at once rather than at its next `take`.
        self.on_overflow = on_overflow
        self.run_id = run_id
        self.job_id = job_id
        self.maxsize = maxsize
        self.maxbytes = maxbytes
        self._queue: deque[Record] = deque()
        self._bytes = 0
        self.overflowed = False
        self._waiter: asyncio.Future[bool] | None = None
        # One timer per subscription, re-armed lazily: a chatty run wakes its followers
        # far more often than `poll`, and a timer per wait would cost a heap push and a
        # cancellation every time.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _offer(self, records: Iterable[Record]) -> None:
        queue = self._queue
        for record in records:
            if self.run_id is not None and record.run_id != self.run_id:
                continue
            if self.job_id is not None and record.job_id != self.job_id:
                continue
            size = _size(record)
            if len(queue) >= self.maxsize or self._bytes + size > self.maxbytes:
                self.overflowed = True
                queue.clear()
                self._bytes = 0
                self._bus.unsubscribe(self)
                if self.on_overflow is not None:
                    self.on_overflow()
                break
            queue.append(record)
            self._bytes += size
        waiter = self._waiter
        if (queue or self.overflowed) and waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _wait(self, poll: float | None) -> bool:
        """Wait for records; False when `poll` seconds pass first."""
        loop = asyncio.get_running_loop()
        if poll is None:
            self._deadline = None
        else:
            self._deadline = loop.time() + poll
            if self._timer is not None and self._timer.when() > self._deadline:
                self._timer.cancel()  # a shorter poll than the armed one
                self._timer = None
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._on_timer)
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # not waiting now; the next wait arms a timer again
        loop = waiter.get_loop()
        if loop.time() < deadline:  # woken since the timer was armed: wait the rest
            self._timer = loop.call_at(deadline, self._on_timer)
        else:
            waiter.set_result(False)

    async def take(self, poll: float | None = None) -> list[Record]:
        """Every queued record (at least one), or [] when `poll` seconds pass first."""
        while not self._queue:
            if self.overflowed:
                raise SlowConsumer("subscriber fell too far behind")
            if not await self._wait(poll):
                return []
        records = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        return records

    @property
    def first_id(self) -> int | None:
        """The id of the oldest record queued (None when none is)."""
        return self._queue[0].id if self._queue else None

    @property
    def pending(self) -> int:
        """Records queued and not yet taken."""
        return len(self._queue)

    def close(self) -> None:
        self._bus.unsubscribe(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, maxsize: int = 4096, maxbytes: int = 4 * 2**20) -> None:
        self.maxsize = maxsize
        self.maxbytes = maxbytes
        self._by_run: dict[str, set[Subscription]] = {}
        self._unfiltered: set[Subscription] = set()  # not tied to one run

    def subscribe(
        self,
        *,
        run_id: str | None = None,
        job_id: str | None = None,
        maxsize: int | None = None,
        maxbytes: int | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> Subscription:
        sub = Subscription(
            self, run_id, job_id, maxsize or self.maxsize, maxbytes or self.maxbytes, on_overflow
        )
        if run_id is None:
            self._unfiltered.add(sub)
        else:
            self._by_run.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.run_id is None:
            self._unfiltered.discard(sub)
            return
        subs = self._by_run.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_run[sub.run_id]

    def publish(self, records: list[Record]) -> None:
        # Copies: a subscriber that overflows unsubscribes while we iterate.
        for sub in list(self._unfiltered):
            sub._offer(records)
        if not self._by_run:
            return
        by_run: dict[str, list[Record]] = {}
        for record in records:
            if record.run_id in self._by_run:
                by_run.setdefault(record.run_id, []).append(record)
        for run_id, run_records in by_run.items():
            for sub in list(self._by_run.get(run_id, ())):
                sub._offer(run_records)

    @property
    def subscriber_count(self) -> int:
        return len(self._unfiltered) + sum(len(subs) for subs in self._by_run.values())
