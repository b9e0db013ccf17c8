"""Storage: migrations keyed on `user_version`, WAL, group commit under load, and a store
that survives a failed write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from flwd.errors import StorageError
from flwd.events.records import Record
from flwd.models import utcnow
from flwd.states import RunStatus
from flwd.storage.schema import SCHEMA_VERSION
from flwd.storage.store import Store
from tests.unit.engine_support import EngineWorld, run_job, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]


def _pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


async def test_a_new_data_dir_is_migrated_to_the_current_schema(
    engine_world: EngineWorld,
) -> None:
    async with engine_world.open():
        pass
    db = engine_world.data_dir / "flwd.db"
    assert _pragma(db, "user_version") == SCHEMA_VERSION >= 1
    assert _pragma(db, "journal_mode") == "wal"  # persistent: set on the file itself
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "steps", "events", "artifacts", "idempotency_keys"} <= tables
    # opening again migrates nothing and loses nothing
    async with engine_world.open():
        pass
    assert _pragma(db, "user_version") == SCHEMA_VERSION


async def test_a_database_from_a_newer_flwd_is_refused(engine_world: EngineWorld) -> None:
    engine_world.data_dir.mkdir()
    db = engine_world.data_dir / "flwd.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for _ in range(2):  # the refusal releases the data dir: the second try says the same
        with pytest.raises(StorageError, match="newer"):
            async with engine_world.open():
                pass
    assert _pragma(db, "user_version") == SCHEMA_VERSION + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


async def test_a_chatty_job_is_stored_in_few_rows_and_few_commits(
    engine_world: EngineWorld,
) -> None:
    lines = 20_000
    engine_world.job("chatty", {"command": f"seq 1 {lines}"})
    async with engine_world.open() as service:
        statements: list[str] = []
        writer = service.store._writer
        assert writer is not None
        writer.set_trace_callback(statements.append)
        run = await run_job(service, "chatty")
        writer.set_trace_callback(None)
        assert run.status is RunStatus.SUCCESS

        (rows,) = await service.store.fetchone(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND type = 'run.output'",
            (run.run_id,),
        )
        logs = await service.read_logs(run.run_id)
        assert [line.message for line in logs] == [str(i) for i in range(1, lines + 1)]
        commits = sum(1 for s in statements if s.strip().upper() == "COMMIT")
        # one row per chunk read from the pipe, not per line; a handful of transactions
        assert rows <= lines / 50, rows
        assert 1 <= commits <= 100, commits


async def test_concurrent_writes_share_commits_and_publish_after_commit(tmp_path: Path) -> None:
    committed: list[list[Record]] = []
    store = Store(tmp_path / "flwd.db", on_commit=committed.append)
    async with store:
        statements: list[str] = []
        assert store._writer is not None
        store._writer.set_trace_callback(statements.append)

        def record(i: int) -> Record:
            return Record(id=i, last_id=i, run_id="r", job_id="j", type="t", ts=utcnow(), data={})

        def insert(i: int) -> tuple[str, tuple[object, ...]]:
            return (
                "INSERT INTO events (id, last_id, run_id, job_id, type, ts, data) "
                "VALUES (?, ?, 'r', 'j', 't', '', x'7b7d')",
                (i, i),
            )

        writes = [store.submit([insert(i)], [record(i)]) for i in range(1, 501)]
        await asyncio.gather(*writes)
        commits = sum(1 for s in statements if s.strip().upper() == "COMMIT")
        assert commits < 50, commits
        published = [r.id for batch in committed for r in batch]
        assert published == list(range(1, 501))  # in submission order, each once
        (count,) = await store.fetchone("SELECT COUNT(*) FROM events")  # type: ignore[misc]
        assert count == 500


async def test_a_failed_write_is_reported_and_the_store_goes_on(tmp_path: Path) -> None:
    committed: list[list[Record]] = []
    async with Store(tmp_path / "flwd.db", on_commit=committed.append) as store:
        bad = Record(id=1, last_id=1, run_id="r", job_id="j", type="t", ts=utcnow(), data={})
        with pytest.raises(StorageError):
            await store.submit([("INSERT INTO no_such_table VALUES (1)", ())], [bad])
        assert committed == []  # nothing that failed to store is ever published
        assert not await store.healthy()
        await store.submit([("INSERT INTO idempotency_keys VALUES ('t', 'k', 'f', 'r', '')", ())])
        assert await store.healthy()
        assert await store.fetchone("SELECT run_id FROM idempotency_keys") == ("r",)


async def test_the_store_lives_in_the_configured_data_dir(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "true"})
    other = engine_world.root / "elsewhere"
    async with engine_world.open(data_dir=str(other)) as service:
        run = await run_job(service, "ok")
    assert (other / "flwd.db").is_file()
    assert not (engine_world.data_dir / "flwd.db").exists()
    with sqlite3.connect(other / "flwd.db") as conn:
        assert conn.execute(
            "SELECT status FROM runs WHERE run_id = ?", (run.run_id,)
        ).fetchone() == ("success",)


async def test_a_read_sees_every_commit_made_before_it_started(tmp_path: Path) -> None:
    """Reads share one connection, and SQLite gives every open statement of a connection
    one snapshot: a query whose cursor another coroutine left open across an `await` made
    later queries read old data (a finished run answered as `running`). Here a commit
    lands while the first query runs; the second, issued before the first was consumed,
    must see it."""
    path = tmp_path / "flwd.db"
    async with Store(path) as store:

        def commit_elsewhere() -> int:
            other = sqlite3.connect(path)
            with other:
                other.execute(
                    "INSERT OR IGNORE INTO idempotency_keys VALUES ('t', 'k', 'f', 'r', '')"
                )
            other.close()
            return 1

        await store.reader.create_function("commit_elsewhere", 0, commit_elsewhere)
        first, second = await asyncio.gather(
            store.fetchall("SELECT commit_elsewhere() FROM sqlite_master LIMIT 2"),
            store.fetchone("SELECT COUNT(*) FROM idempotency_keys"),
        )
        assert [tuple(row) for row in first] == [(1,), (1,)]
        assert second is not None and tuple(second) == (1,)


async def test_writes_nobody_waits_for_are_committed_soon_and_in_order(tmp_path: Path) -> None:
    committed: list[list[Record]] = []

    def write(i: int, *, wait: bool) -> asyncio.Future[None] | None:
        record = Record(id=i, last_id=i, run_id="r", job_id="j", type="t", ts=utcnow(), data={})
        insert = (
            "INSERT INTO events (id, last_id, run_id, job_id, type, ts, data) "
            "VALUES (?, ?, 'r', 'j', 't', '', x'7b7d')",
            (i, i),
        )
        return store.write([insert], [record], wait=wait)

    async with Store(tmp_path / "flwd.db", on_commit=committed.append) as store:
        # alone, it lingers a moment for company, then is committed all the same
        assert write(1, wait=False) is None
        await wait_for(lambda: committed, timeout=5, what="the lingering write to commit")
        # a write someone waits for takes those queued before it into its commit
        write(2, wait=False)
        write(3, wait=False)
        future = write(4, wait=True)
        assert future is not None
        await future
        assert [[r.id for r in batch] for batch in committed] == [[1], [2, 3, 4]]
        (count,) = await store.fetchone("SELECT COUNT(*) FROM events")  # type: ignore[misc]
        assert count == 4


async def test_the_wal_is_checkpointed_while_commits_keep_coming(tmp_path: Path) -> None:
    """SQLite's own checkpoint is off (it would run inside a commit, which may be applied
    on the loop's thread): the store checkpoints between batches, so the WAL restarts
    instead of growing with every commit (1,200 commits of one row: ~12 MB without)."""
    async with Store(tmp_path / "flwd.db") as store:
        for i in range(1, 1201):
            await store.submit(
                [
                    (
                        "INSERT INTO events (id, last_id, run_id, job_id, type, ts, data) "
                        "VALUES (?, ?, 'r', 'j', 't', '', x'7b7d')",
                        (i, i),
                    )
                ]
            )
        assert (tmp_path / "flwd.db-wal").stat().st_size < 6 * 1024 * 1024
        (count,) = await store.fetchone("SELECT COUNT(*) FROM events")  # type: ignore[misc]
        assert count == 1200
