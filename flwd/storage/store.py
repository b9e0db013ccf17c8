"""The SQLite store: one reader connection, and one writer task that batches commits.

Every write goes through `Store.write` (or `submit`): statements queue up and the writer
applies all that are waiting in one transaction (group commit). Idle, a write commits at
once; under load, hundreds of rows share a commit, which is what keeps a chatty job from
turning into one transaction per line. Records attached to a write are handed to
`on_commit` only after their transaction committed, so nothing is ever published that is
not stored.

The queue is bounded by bytes, not by count: a batch carries at most `_BATCH_BYTES`, and
producers of bulk data (run output) wait in `room()` while `_QUEUE_BYTES` are queued, so a
job writing faster than the disk is slowed down instead of growing memory. State changes
never wait for room: they are small, and a run must be able to end while its output is
throttled.

Reads go through an aiosqlite connection; each is one hop to its thread (execute, fetch
every row, close). The writer is a plain `sqlite3` connection that flwd drives itself, on
one worker thread of its own (a whole batch, statements and commit, per hop) or, for a
batch of state changes and events (no bulk output), on the loop's thread (see `_apply`);
never two at once, as the writer task applies one batch at a time. No cursor stays
open across an `await`, which matters for the shared reader: SQLite gives all open
statements of a connection one read snapshot, so a statement left open by one coroutine
would make another coroutine's query read an old snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from flwd.access import job_matches
from flwd.errors import StorageError
from flwd.storage.private import PRIVATE_FILE, make_private_dir, make_private_file, narrow
from flwd.storage.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
#: the SQL function of `_add_functions`
JOB_MATCHES_SQL = "flwd_job_matches"
Statement = tuple[str, Sequence[Any]]

_BATCH_WRITES = 2000
_BATCH_BYTES = 8 * 1024 * 1024
_QUEUE_BYTES = 16 * 1024 * 1024
#: what a write of small statements counts for (a row of state, an event)
_WRITE_BYTES = 256
#: how long, and up to how many bytes, a write nobody waits for may wait for company
_LINGER = 0.005
_LINGER_BYTES = 1024 * 1024
#: a batch of at most this many statements and counted bytes is applied on the event
#: loop's thread (see `_apply`)
_INLINE_STATEMENTS = 512
_INLINE_BYTES = 256 * 1024
#: the WAL is checkpointed after this many commits, writes or counted bytes (see `_apply`)
_CHECKPOINT_COMMITS = 250
_CHECKPOINT_WRITES = 1000
_CHECKPOINT_BYTES = 4 * 1024 * 1024


class _Write:
    __slots__ = ("future", "records", "size", "statements")

    def __init__(
        self,
        statements: Sequence[Statement],
        records: Sequence[Any],
        future: asyncio.Future[None] | None,
        size: int,
    ) -> None:
        self.statements = statements
        self.records = records
        self.future = future
        self.size = size


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
        self._writer: sqlite3.Connection | None = None
        #: the writer's own thread: one, so the writer's calls never overlap
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: deque[_Write] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._linger: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._since_checkpoint = (0, 0, 0)  # commits, writes, counted bytes
        self.failed: BaseException | None = None
        #: batches that failed to commit since the store opened
        self.failures = 0

    async def __aenter__(self) -> Store:
        if self.readonly:
            # for reading a data dir another process owns (CLI next to a running server)
            if not self.path.exists():
                raise StorageError(f"there is no flwd database at {self.path}")
            self._reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await _add_functions(self._reader)
            return self
        make_private_dir(self.path.parent)
        # SQLite gives the WAL and shared-memory files the database file's mode
        make_private_file(self.path)
        for suffix in ("-wal", "-shm"):
            narrow(self.path.with_name(self.path.name + suffix), PRIVATE_FILE)
        # used by the writer task only, one call at a time: on the writer's thread, or for
        # a small batch on the loop's (see `_apply`)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flwd-store")
        try:
            self._writer = await self._on_writer_thread(_open_writer, self.path)
        except BaseException:
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None
            raise
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        await self._reader.execute("PRAGMA query_only=ON")
        await _add_functions(self._reader)
        self._stopping = False
        self._task = asyncio.create_task(self._write_loop(), name="flwd-store-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._stopping = True
            self._wakeup.set()
            await self._task
            self._task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer is not None:
            await self._on_writer_thread(self._writer.close)
            self._writer = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None

    async def _on_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn(*args)` on the writer's own thread."""
        assert self._writer_thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageError("the store is not open")
        return self._reader

    def write(
        self,
        statements: Sequence[Statement],
        records: Sequence[Any] = (),
        *,
        wait: bool = True,
        size: int = _WRITE_BYTES,
    ) -> asyncio.Future[None] | None:
        """Queue a write now and return the future of its commit (None without `wait`).

        Writes are applied in the order they were queued. A write someone waits for is
        committed at once, with everything queued before it; one nobody waits for may
        wait up to `_LINGER` seconds (or until `_LINGER_BYTES` are queued) for company,
        so that the few writes of a run share commits instead of costing one each.
        `size` is what the write counts for against the queue's byte bound. A write nobody
        waits for that fails is logged, and counted in `failures`.
        """
        if self._task is None or self._task.done() or self._stopping:
            raise StorageError("the store's writer is not running")
        future = asyncio.get_running_loop().create_future() if wait else None
        self._pending.append(_Write(statements, records, future, size))
        self._queued_bytes += size
        if self._queued_bytes >= _QUEUE_BYTES:
            self._room.clear()
        if wait or not _LINGER or self._queued_bytes >= _LINGER_BYTES:
            self._wakeup.set()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(_LINGER, self._wakeup.set)
        return future

    @property
    def full(self) -> bool:
        """Whether the queue holds too many bytes: producers of bulk writes should wait
        (`room`) before queueing more."""
        return not self._room.is_set()

    async def room(self) -> None:
        """Wait while the queue holds too many bytes (for producers of bulk writes)."""
        while not self._room.is_set():
            if self._task is None or self._task.done():
                raise StorageError("the store's writer is not running")
            await self._room.wait()

    async def submit(
        self, statements: Sequence[Statement], records: Sequence[Any] = (), *, wait: bool = True
    ) -> None:
        """Queue statements (and records to publish once committed); with `wait`, return
        after the commit (raising `StorageError` if it failed)."""
        future = self.write(statements, records, wait=wait)
        if future is not None:
            await future

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # one hop: execute, fetch every row, and finish the statement in the thread
        return list(await self.reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def healthy(self) -> bool:
        if self.failed is not None or self._task is None or self._task.done():
            return False
        try:
            await self.fetchone("SELECT 1")
        except Exception:
            return False
        return True

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            if not self._pending:
                if self._stopping:
                    return
                continue
            batch: list[_Write] = []
            size = 0
            while self._pending and len(batch) < _BATCH_WRITES and size < _BATCH_BYTES:
                write = self._pending.popleft()
                batch.append(write)
                size += write.size
            if self._pending:  # a full batch: the rest goes next, without lingering
                self._wakeup.set()
            self._queued_bytes -= size
            if self._queued_bytes < _QUEUE_BYTES:
                self._room.set()
            await self._apply(batch)

    async def _apply(self, batch: list[_Write]) -> None:
        """Apply a batch in one transaction.

        A batch of state changes and events (up to `_INLINE_STATEMENTS` statements and
        `_INLINE_BYTES` counted bytes) is applied right here, on the loop's thread: SQLite
        takes 0.1-0.9 ms for it (with synchronous=NORMAL a WAL commit does not sync),
        less than the hop to the writer's thread and back with the two threads taking
        turns at the GIL meanwhile, even while other runs wait for the loop (measured:
        the engine's no-op runs at concurrency 16 went from about 50 % to about 60 % of
        the spawn floor's rate). A bigger batch (bulk output) and every checkpoint go to
        the writer's own thread, so the loop is never held for long.
        """
        assert self._writer is not None
        writer = self._writer
        groups = _group(batch)
        try:
            small = (
                sum(write.size for write in batch) <= _INLINE_BYTES
                and sum(len(rows) for _, rows in groups) <= _INLINE_STATEMENTS
            )
            if small:
                _apply_in_thread(writer, groups)
            else:
                await self._on_writer_thread(_apply_in_thread, writer, groups)
        except Exception as exc:
            log.exception("storage write failed; %d queued writes were not applied", len(batch))
            self.failed = exc
            self.failures += 1
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
        await self._checkpoint_now_and_then(len(batch), sum(write.size for write in batch))

    async def _checkpoint_now_and_then(self, writes: int, size: int) -> None:
        """Copy the WAL into the database every 250 commits, 1,000 writes or 4 MiB, between
        batches, so that the WAL restarts from its beginning instead of growing (what
        SQLite's automatic checkpoint did inside the commit crossing 1,000 WAL pages)."""
        commits, before, counted = self._since_checkpoint
        commits, writes, size = commits + 1, before + writes, counted + size
        due = (
            commits >= _CHECKPOINT_COMMITS
            or writes >= _CHECKPOINT_WRITES
            or size >= _CHECKPOINT_BYTES
        )
        if not due:
            self._since_checkpoint = (commits, writes, size)
            return
        self._since_checkpoint = (0, 0, 0)
        assert self._writer is not None
        try:
            await self._on_writer_thread(_checkpoint_in_thread, self._writer)
        except Exception:
            log.exception("WAL checkpoint failed; the next one will retry")


async def _add_functions(reader: aiosqlite.Connection) -> None:
    """SQL functions reads use: `flwd_job_matches(pattern, job_id)` applies an actor's
    job-pattern confinement (`flwd.access.job_matches`) inside a query, so that pages and
    totals leave out what the actor does not see."""
    await reader.create_function(JOB_MATCHES_SQL, 2, job_matches, deterministic=True)


def _open_writer(path: Path) -> sqlite3.Connection:
    """The writer connection, set up and with the schema migrated to the current one."""
    # check_same_thread=False: used from the writer's thread and the loop's, never at once
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=5000",
            "PRAGMA foreign_keys=ON",
            # never inside a commit (one might be applied on the loop's thread): `_apply`
            # checkpoints on the writer's thread between batches
            "PRAGMA wal_autocheckpoint=0",
        ):
            conn.execute(pragma).fetchall()
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _apply_in_thread(
    conn: sqlite3.Connection, groups: list[tuple[str, list[Sequence[Any]]]]
) -> None:
    """Apply a batch in one transaction (on the writer's thread, or a small one on the
    loop's)."""
    try:
        for sql, rows in groups:
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            else:
                conn.executemany(sql, rows)
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except Exception:
            log.exception("rollback failed")
        raise


def _checkpoint_in_thread(conn: sqlite3.Connection) -> None:
    # passive: copies what no reader still needs; the next one continues
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


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
