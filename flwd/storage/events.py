"""The `events` table: the journal's rows, written and read here with SQL the journal
never sees.

Most rows are one event. A row of the chunk type (the journal's `run.output`) holds a
chunk of output lines: its ids run from `id` to `last_id`, one per line. Rows are returned
as stored (`id, last_id, run_id, job_id, type, ts, data, text`); turning them into events
is the journal's business.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from flwd.storage.store import Statement, Store
from flwd.timefmt import iso

#: Inserts one row: `(id, last_id, run_id, job_id, type, ts, data, text)`. A constant the
#: journal pairs with its values itself, so that queuing an event costs no extra call.
INSERT_EVENT = (
    "INSERT INTO events (id, last_id, run_id, job_id, type, ts, data, text) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: What a chunk of output may hold at most (one 64 KiB read of a pipe plus a partial
#: line), and a line (the default line limit): sizes are estimated from line counts.
_CHUNK_BYTES = 80 * 1024
_LINE_BYTES = 16 * 1024


class EventRows:
    """Reads of the `events` table, and the statements that change it."""

    def __init__(self, store: Store, *, chunk_type: str) -> None:
        self.store = store
        #: the type of the rows that hold a chunk of output lines
        self.chunk_type = chunk_type
        self._delete_chunk = f"DELETE FROM events WHERE id = ? AND type = '{chunk_type}'"

    def delete_chunks(self, rows: list[int]) -> list[Statement]:
        """Deleting stored chunks of output, by row id (never another type's row)."""
        return [(self._delete_chunk, (row,)) for row in rows]

    async def last_id(self) -> int:
        """The highest event id stored (0 when none is)."""
        row = await self.store.fetchone("SELECT COALESCE(MAX(last_id), 0) FROM events")
        return int(row[0]) if row else 0

    async def page(
        self,
        *,
        since: int,
        run_id: str | None,
        job_id: str | None,
        limit: int,
        page_bytes: int,
    ) -> list[sqlite3.Row]:
        """Stored rows holding events with id > since, in id order: at most `limit` rows
        and about `page_bytes` of them (estimated without reading them)."""
        start_row = await self.store.fetchone(
            "SELECT id FROM events WHERE id <= ? ORDER BY id DESC LIMIT 1", (since + 1,)
        )
        start = int(start_row[0]) if start_row else 0
        clauses = ["id >= ?", "last_id > ?"]
        params: list[Any] = [start, since]
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if job_id is not None:
            clauses.append("job_id = ?")
            params.append(job_id)
        where = " AND ".join(clauses)
        # Where the page ends, from ids and types only (no text is read): where the
        # estimated size of its rows reaches `page_bytes`. A chunk of output holds at most
        # one pipe read plus a partial line (~80 KiB) and at most a line limit per line.
        end = await self.store.fetchone(
            "SELECT id FROM (SELECT id, SUM(CASE WHEN type = ? "
            "THEN MIN(?, (last_id - id + 1) * ?) ELSE 256 END) OVER (ORDER BY id) AS size "
            f"FROM (SELECT id, last_id, type FROM events WHERE {where} ORDER BY id LIMIT ?)) "
            "WHERE size >= ? LIMIT 1",
            (self.chunk_type, _CHUNK_BYTES, _LINE_BYTES, *params, limit, page_bytes),
        )
        if end is not None:
            where += " AND id <= ?"
            params.append(int(end[0]))
        return await self.store.fetchall(
            "SELECT id, last_id, run_id, job_id, type, ts, data, text FROM events WHERE "
            + where
            + " ORDER BY id LIMIT ?",
            (*params, limit),
        )

    async def chunks(self, run_id: str, *, after: int, limit: int) -> list[sqlite3.Row]:
        """The run's first `limit` chunks of output holding a line with id > `after`, as
        `id, last_id, ts, data, text`."""
        return await self.store.fetchall(
            "SELECT id, last_id, ts, data, text FROM events "
            "WHERE run_id = ? AND type = ? AND last_id > ? ORDER BY id LIMIT ?",
            (run_id, self.chunk_type, after, limit),
        )

    async def count_lines(self, run_id: str) -> int:
        """How many output lines of the run are stored (from row ids: no text is read)."""
        row = await self.store.fetchone(
            "SELECT COALESCE(SUM(last_id - id + 1), 0) FROM events WHERE run_id = ? AND type = ?",
            (run_id, self.chunk_type),
        )
        return int(row[0]) if row else 0

    async def last_chunks(self, run_id: str, count: int) -> list[sqlite3.Row]:
        """The run's last `count` chunks of output, newest first, as `id, last_id`."""
        return await self.store.fetchall(
            "SELECT id, last_id FROM events WHERE run_id = ? AND type = ? ORDER BY id DESC LIMIT ?",
            (run_id, self.chunk_type, count),
        )

    async def time_position(self, run_id: str, moment: datetime) -> int:
        """The id after which the run's events stamped after `moment` start (a chunk of
        lines has one timestamp, so a chunk is before or after as a whole)."""
        row = await self.store.fetchone(
            "SELECT MIN(id) FROM events WHERE run_id = ? AND ts > ?", (run_id, iso(moment))
        )
        if row is not None and row[0] is not None:
            return int(row[0]) - 1
        last = await self.store.fetchone(
            "SELECT COALESCE(MAX(last_id), 0) FROM events WHERE run_id = ?", (run_id,)
        )
        return int(last[0]) if last else 0
