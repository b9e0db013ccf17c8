"""The SQLite store: one reader connection, and one writer task that batches commits.

Every write goes through `Store.submit`: statements queue up and the writer applies all
that are waiting in one transaction (group commit). Idle, a write commits at once; under
load, hundreds of rows share a commit, which is what keeps a chatty job from turning into
one transaction per line. Records attached to a write are handed to `on_commit` only after
their transaction committed, so nothing is ever published that is not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from flwd.errors import StorageError
from flwd.storage.schema import migrate

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]

_MAX_BATCH = 2000
_QUEUE_DEPTH = 20000


class _Write:
    __slots__ = ("future", "records", "statements")

    def __init__(
        self,
        statements: Sequence[Statement],
        records: Sequence[Any],
        future: asyncio.Future[None] | None,
    ) -> None:
        self.statements = statements
        self.records = records
        self.future = future


_STOP = _Write((), (), None)


class Store:
    """Owns the database file under the data dir. Use as an async context manager."""

    def __init__(
        self,
        path: Path,
        on_commit: Callable[[list[Any]], None] | None = None,
        *,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.on_commit = on_commit
        self.readonly = readonly
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Write] = asyncio.Queue(_QUEUE_DEPTH)
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None

    async def __aenter__(self) -> Store:
        if self.readonly:
            # for reading a data dir another process owns (CLI next to a running server)
            if not self.path.exists():
                raise StorageError(f"there is no flwd database at {self.path}")
            self._reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=5000",
            "PRAGMA foreign_keys=ON",
        ):
            await self._writer.execute(pragma)
        await migrate(self._writer)
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        await self._reader.execute("PRAGMA query_only=ON")
        self._task = asyncio.create_task(self._write_loop(), name="flwd-store-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
            self._task = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageError("the store is not open")
        return self._reader

    async def submit(
        self, statements: Sequence[Statement], records: Sequence[Any] = (), *, wait: bool = True
    ) -> None:
        """Queue statements (and records to publish once committed).

        With `wait`, return after the commit (raising `StorageError` if it failed); without,
        return once queued — a full queue still makes the caller wait, which is how a job
        writing faster than the disk is slowed down instead of growing memory.
        """
        future = await self.enqueue(statements, records, wait=wait)
        if future is not None:
            await future

    async def enqueue(
        self, statements: Sequence[Statement], records: Sequence[Any] = (), *, wait: bool = True
    ) -> asyncio.Future[None] | None:
        """Queue a write and return the future of its commit (None without `wait`).

        Writes are applied in the order they entered the queue.
        """
        if self._task is None or self._task.done():
            raise StorageError("the store's writer is not running")
        future = asyncio.get_running_loop().create_future() if wait else None
        await self._queue.put(_Write(statements, records, future))
        return future

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.reader.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def healthy(self) -> bool:
        if self.failed is not None or self._task is None or self._task.done():
            return False
        try:
            await self.fetchone("SELECT 1")
        except Exception:
            return False
        return True

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if batch[-1] is _STOP or _STOP in batch:
                stopping = True
                batch = [w for w in batch if w is not _STOP]
            if batch:
                await self._apply(batch)

    async def _apply(self, batch: list[_Write]) -> None:
        assert self._writer is not None
        try:
            for sql, rows in _group(batch):
                if len(rows) == 1:
                    await self._writer.execute(sql, rows[0])
                else:
                    await self._writer.executemany(sql, rows)
            await self._writer.commit()
        except Exception as exc:
            log.exception("storage write failed; %d queued writes were not applied", len(batch))
            self.failed = exc
            try:
                await self._writer.rollback()
            except Exception:
                log.exception("rollback failed")
            for write in batch:
                if write.future is not None and not write.future.done():
                    write.future.set_exception(StorageError(f"storage write failed: {exc}"))
            return
        self.failed = None
        if self.on_commit is not None:
            records = [r for write in batch for r in write.records]
            if records:
                try:
                    self.on_commit(records)
                except Exception:
                    log.exception("publishing committed records failed")
        for write in batch:
            if write.future is not None and not write.future.done():
                write.future.set_result(None)


def _group(batch: list[_Write]) -> list[tuple[str, list[Sequence[Any]]]]:
    """Consecutive statements with the same SQL become one executemany, order preserved."""
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    for write in batch:
        for sql, params in write.statements:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(params)
            else:
                groups.append((sql, [params]))
    return groups
