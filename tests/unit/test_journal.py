"""The event journal: contract events in order with strictly increasing ids, stored before
published, and `RunService.follow` replaying then going live with no gap and no duplicate.
Resuming inside a chunk of lines, unfiltered follows, slow subscribers and finished runs
are tested on the feed that `follow` is built on (test_api_feed.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

from flwd.events.records import Record
from flwd.models import Event
from tests.unit.engine_support import EngineWorld, events_of, finish, run_job, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]


async def test_contract_events_in_order_with_increasing_ids(engine_world: EngineWorld) -> None:
    engine_world.job(
        "ok",
        {"command": 'echo one; echo two >&2; echo \'{"v": 1}\' > "$FLWD_RESULT_FILE"'},
    )
    engine_world.job("wait", {"command": "echo ready; sleep 300"})
    async with engine_world.open() as service:
        ok = await run_job(service, "ok")
        waiting = await service.create_run("wait", {})

        async def ready() -> bool:
            return any(x.message == "ready" for x in await service.read_logs(waiting.run_id))

        await wait_for(ready)
        await service.cancel_run(waiting.run_id)

        ok_events = await events_of(service, ok.run_id)
        assert [e.type for e in ok_events] == [
            "run.created",
            "run.started",
            "step.started",
            "run.output",
            "run.output",
            "step.result",
            "step.finished",
            "run.finished",
        ]
        assert [e.data.get("message") for e in ok_events if e.type == "run.output"] == [
            "one",
            "two",
        ]
        cancelled = await events_of(service, waiting.run_id)
        assert [e.type for e in cancelled] == [
            "run.created",
            "run.started",
            "step.started",
            "run.output",
            "run.cancelled",
            "step.finished",
            "run.finished",
        ]
        assert cancelled[-1].data["status"] == "cancelled"
        everything = await service.journal.read(since=0, limit=10_000)
        ids = [e.id for e in everything]
        assert ids == sorted(set(ids)) and ids == list(range(1, len(ids) + 1))
        assert all(e.job_id in ("ok", "wait") for e in everything)
        stamps = [e.timestamp for e in everything]
        assert stamps == sorted(stamps)


async def test_ids_keep_increasing_across_restarts(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        first = await events_of(service, (await run_job(service, "ok")).run_id)
    async with engine_world.open() as service:
        second = await events_of(service, (await run_job(service, "ok")).run_id)
        assert second[0].id == first[-1].id + 1
        # and the first life's events are still there, unchanged
        assert await events_of(service, first[0].run_id) == first


async def test_events_are_stored_before_they_are_published(engine_world: EngineWorld) -> None:
    engine_world.job("chatty", {"command": "for i in $(seq 200); do echo line $i; done"})
    async with engine_world.open() as service:
        # an independent connection, as another process would read the file
        db = sqlite3.connect(f"file:{engine_world.data_dir / 'flwd.db'}?mode=ro", uri=True)
        missing: list[int] = []
        published: list[int] = []

        def check(records: list[Record]) -> None:
            # called synchronously as the records are handed to the bus
            for record in records:
                published.extend(range(record.id, record.last_id + 1))
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM events WHERE id = ? AND last_id = ?",
                    (record.id, record.last_id),
                ).fetchone()
                if count != 1:
                    missing.append(record.id)

        service.journal.listeners.append(check)
        with service.bus.subscribe() as sub:
            runs = [await service.create_run("chatty", {}) for _ in range(3)]
            for run in runs:
                await finish(service, run)
            received: list[int] = []
            while records := await sub.take(0.2):
                received.extend(e.id for record in records for e in record.events())
        db.close()
        assert published and missing == []
        stored = [e.id for e in await service.journal.read(since=0, limit=10_000)]
        assert received == published == stored


async def _collect(stream: AsyncIterator[Event], into: list[Event]) -> None:
    async for event in stream:
        into.append(event)


async def test_follow_replays_then_goes_live_without_gap_or_duplicate(
    engine_world: EngineWorld,
) -> None:
    gate = engine_world.root / "gate"
    engine_world.job(
        "bursts",
        {
            "command": (
                "for i in $(seq 50); do echo early $i; done; "
                f"while [ ! -e {gate} ]; do sleep 0.02; done; "
                "for b in $(seq 20); do for i in $(seq 10); do echo late $b.$i; done; "
                "sleep 0.01; done"
            )
        },
    )
    async with engine_world.open() as service:
        created = await service.create_run("bursts", {})

        async def early_done() -> list[Event] | None:
            events = await events_of(service, created.run_id)
            early = [e for e in events if e.data.get("message", "").startswith("early")]
            return events if len(early) == 50 else None

        before = await wait_for(early_done, what="the early lines")
        middle = before[len(before) // 2].id
        streams: dict[str, list[Event]] = {"start": [], "middle": [], "default": []}
        tasks = [
            asyncio.create_task(
                _collect(
                    service.follow(since=since, run_id=created.run_id, until_terminal=True),
                    streams[name],
                )
            )
            for name, since in (("start", 0), ("middle", middle), ("default", None))
        ]
        await asyncio.sleep(0)  # let them start replaying, then the run goes on live
        gate.touch()
        await finish(service, created)
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks)

        stored = await events_of(service, created.run_id)
        assert stored[-1].type == "run.finished"
        assert len([e for e in stored if e.type == "run.output"]) == 250
        assert streams["start"] == stored
        assert streams["default"] == stored  # a run's stream starts at its first event
        assert streams["middle"] == [e for e in stored if e.id > middle]


async def test_stored_output_is_read_in_pages_bounded_in_bytes(engine_world: EngineWorld) -> None:
    # ~3 MB of numbered 100-byte lines: dozens of stored chunks of up to 64 KiB each
    engine_world.job("big", {"command": "seq -f '%099g' 1 30000"})
    async with engine_world.open() as service:
        run = await run_job(service, "big")
        journal = service.journal
        everything = await journal.read_logs(run.run_id)
        assert [int(x.message) for x in everything] == list(range(1, 30001))
        assert await journal.count_logs(run.run_id) == 30000

        # pages of stored rows: each about PAGE_BYTES, together every event once
        since, seen, pages = 0, [], 0
        while records := await journal.read_records(since=since, run_id=run.run_id):
            text = sum(len(r.text or "") for r in records)
            assert text <= 256 * 1024 + 80 * 1024, text
            seen += [e.id for r in records for e in r.iter_events(since)]
            since = records[-1].last_id
            pages += 1
        assert pages > 5
        assert seen == sorted(set(seen))
        assert [i for i in seen if i >= everything[0].id][:30000] == [x.id for x in everything]

        # lines from inside a chunk, a limited number, across chunk boundaries
        middle = everything[12345].id
        page = await journal.read_logs(run.run_id, since_id=middle, limit=5000)
        assert page == everything[12346:17346]

        # the last lines, located from the rows' ids alone
        start = await journal.tail_position(run.run_id, 777)
        assert await journal.read_logs(run.run_id, since_id=start) == everything[-777:]
        assert await journal.tail_position(run.run_id, 10**6) == 0
