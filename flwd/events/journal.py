"""The event journal: every event is stored first (SQLite) and published second (bus).

Ids are global and strictly increasing: each is allocated and its write queued in one step
(no `await` in between), the writer applies the queue in order, and records are published
only after their commit. Callers choose whether to wait for the commit (`append`) or only
queue the event (`post`): what a caller reports to others must have been waited for.
Following the journal (stored events, then live ones) is `flwd.events.feed.EventFeed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from flwd.events.bus import EventBus
from flwd.events.records import OUTPUT, Record
from flwd.models import Event, LogLine, utcnow
from flwd.storage.events import INSERT_EVENT, EventRows
from flwd.storage.store import Statement, Store
from flwd.timefmt import iso

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
#: A page of stored events holds at most this many rows ...
PAGE_ROWS = 500
#: ... and about this many bytes: a replay or a page of logs holds one page at a time.
PAGE_BYTES = 256 * 1024
#: Chunks of output read at once by `read_logs` (a page of lines is read in these steps).
_LOG_ROWS = 16
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class Journal:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.rows = EventRows(store, chunk_type=OUTPUT)
        self.bus = bus
        self._next_id = 1
        self.last_published = 0
        self.listeners: list[Callable[[list[Record]], None]] = []

    async def open(self) -> None:
        self._next_id = await self.rows.last_id() + 1
        self.last_published = self._next_id - 1

    def committed(self, records: list[Record]) -> None:
        """Store callback: publish records whose transaction has committed."""
        self.last_published = max(self.last_published, records[-1].last_id)
        self.bus.publish(records)
        for listener in self.listeners:
            try:
                listener(records)
            except Exception:
                log.exception("journal listener failed")

    def post(
        self,
        type: str,
        run_id: str,
        job_id: str,
        data: dict[str, Any] | None = None,
        *,
        statements: Sequence[Statement] = (),
        wait: bool = True,
    ) -> asyncio.Future[None] | None:
        """Queue one event, with `statements` in the same transaction, without waiting.

        Returns the future of its commit (None without `wait`). The event's id is
        allocated and its write queued in one step, so ids reach the writer in order.
        """
        return self._queue(type, run_id, job_id, data or {}, statements=statements, wait=wait)

    async def append(
        self,
        type: str,
        run_id: str,
        job_id: str,
        data: dict[str, Any] | None = None,
        *,
        statements: Sequence[Statement] = (),
    ) -> None:
        """Store one event, together with `statements` in the same transaction, and return
        after the commit: the caller's state change is durable and the event published."""
        future = self.post(type, run_id, job_id, data, statements=statements)
        assert future is not None
        await future

    async def append_output(
        self, run_id: str, job_id: str, data: dict[str, Any], text: str, lines: int
    ) -> None:
        """Store a chunk of `lines` output lines (joined by '\\n') without waiting for its
        commit; waits only while the store's queue is full (back-pressure on the job)."""
        await self.store.room()
        self.post_output(run_id, job_id, data, text, lines)

    def post_output(
        self, run_id: str, job_id: str, data: dict[str, Any], text: str, lines: int
    ) -> int:
        """`append_output` without waiting for room: for a producer that applies the
        back-pressure itself (the executor pauses reading the step's pipes). The stored
        row's id (its first line's event id)."""
        first = self._next_id
        self._queue(OUTPUT, run_id, job_id, data, text=text, lines=lines, wait=False)
        return first

    def delete_output(self, rows: list[int]) -> None:
        """Delete stored chunks of output (by row id), once published: what a run's
        rolling tail no longer keeps."""
        self.store.write(self.rows.delete_chunks(rows), wait=False)

    def _queue(
        self,
        type: str,
        run_id: str,
        job_id: str,
        data: dict[str, Any],
        *,
        text: str | None = None,
        lines: int = 1,
        statements: Sequence[Statement] = (),
        wait: bool,
    ) -> asyncio.Future[None] | None:
        """Allocate the ids of one stored row (`lines` events for a chunk of output) and
        queue its insert after `statements`, with no `await` between the two."""
        ts = utcnow()
        first = self._next_id
        last = first + lines - 1
        self._next_id = last + 1
        record = Record(
            id=first,
            last_id=last,
            run_id=run_id,
            job_id=job_id,
            type=type,
            ts=ts,
            data=data,
            text=text,
        )
        insert = (INSERT_EVENT, (first, last, run_id, job_id, type, iso(ts), _encode(data), text))
        writes = [*statements, insert]
        if text is None:
            return self.store.write(writes, [record], wait=wait)
        # output counts its text against the store's queue bound (a state change 256 bytes)
        return self.store.write(writes, [record], wait=wait, size=len(text) + 256)

    async def read_records(
        self,
        *,
        since: int = 0,
        run_id: str | None = None,
        job_id: str | None = None,
        limit: int = PAGE_ROWS,
        page_bytes: int = PAGE_BYTES,
    ) -> list[Record]:
        """Stored rows holding events with id > since, in id order: at most `limit` rows
        and about `page_bytes` of them (estimated without reading them), so a page costs
        little memory however large the log is."""
        rows = await self.rows.page(
            since=since, run_id=run_id, job_id=job_id, limit=limit, page_bytes=page_bytes
        )
        return [
            Record(
                id=r[0],
                last_id=r[1],
                run_id=r[2],
                job_id=r[3],
                type=r[4],
                ts=datetime.fromisoformat(r[5]),
                data=_decode(r[6]),
                text=r[7],
            )
            for r in rows
        ]

    async def read(
        self,
        *,
        since: int = 0,
        run_id: str | None = None,
        job_id: str | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        events: list[Event] = []
        cursor = since
        while len(events) < limit:
            records = await self.read_records(since=cursor, run_id=run_id, job_id=job_id)
            if not records:
                break
            for record in records:
                events.extend(e for e in record.events() if e.id > cursor)
            cursor = records[-1].last_id
        return events[:limit]

    async def read_logs(
        self, run_id: str, *, since_id: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        """The run's log lines with id > `since_id`, in order: the first `limit` of them
        (all when None). Read in pages of a few chunks (keyset on the row id), so a page
        boundary inside a chunk neither loses nor repeats a line: line `i` of the chunk
        stored in row `id` is the event `id + i`, and only lines after `since_id` count."""
        lines: list[LogLine] = []
        cursor = since_id
        while limit is None or len(lines) < limit:
            rows = await self.rows.chunks(run_id, after=cursor, limit=_LOG_ROWS)
            if not rows:
                break
            for r in rows:
                record = Record(
                    id=r[0],
                    last_id=r[1],
                    run_id=run_id,
                    job_id="",
                    type=OUTPUT,
                    ts=datetime.fromisoformat(r[2]),
                    data=_decode(r[3]),
                    text=r[4],
                )
                room = None if limit is None else limit - len(lines)
                lines.extend(record.log_lines(after=cursor, limit=room))
                if limit is not None and len(lines) >= limit:
                    return lines
            cursor = int(rows[-1][1])
        return lines

    async def count_logs(self, run_id: str) -> int:
        """How many log lines of the run are stored (from row ids: no text is read)."""
        return await self.rows.count_lines(run_id)

    async def tail_position(self, run_id: str, lines: int) -> int:
        """The id after which the run's last `lines` stored log lines start (0 when the
        log is shorter), found from the newest rows' ids alone: no text is read."""
        rows = await self.rows.last_chunks(run_id, lines)
        wanted = lines
        for first, last in rows:
            count = last - first + 1
            if count >= wanted:
                return int(last) - wanted
            wanted -= count
        return 0

    async def time_position(self, run_id: str, moment: datetime) -> int:
        """The id after which the run's events stamped after `moment` start (a chunk of
        lines has one timestamp, so a chunk is before or after as a whole)."""
        return await self.rows.time_position(run_id, moment)
