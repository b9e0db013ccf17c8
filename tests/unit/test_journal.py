"""The event journal: contract events in order with strictly increasing ids, stored before
published, replay from any id with no gap and no duplicate (live too), fan-out to many
subscribers, and a slow subscriber cut off without hurting the others."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from flwd.events.bus import SlowConsumer
from flwd.events.records import Record
from flwd.models import Event
from flwd.states import RunStatus
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
            "step.output",
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


async def test_follow_resumes_inside_a_chunk_of_lines(engine_world: EngineWorld) -> None:
    engine_world.job("burst", {"command": "seq 1 50"})
    async with engine_world.open() as service:
        run = await run_job(service, "burst")
        rows = await service.store.fetchall(
            "SELECT id, last_id FROM events WHERE run_id = ? AND type = 'run.output'",
            (run.run_id,),
        )
        assert any(last > first for first, last in rows), "expected lines sharing a row"
        lines = [e for e in await events_of(service, run.run_id) if e.type == "run.output"]
        assert [e.data["message"] for e in lines] == [str(i) for i in range(1, 51)]
        since = lines[9].id  # the 10th line, in the middle of a stored row
        replay = [
            e async for e in service.follow(since=since, run_id=run.run_id, until_terminal=True)
        ]
        assert [e.data.get("message") for e in replay if e.type == "run.output"] == [
            str(i) for i in range(11, 51)
        ]
        assert replay[0].id == since + 1


async def test_unfiltered_follow_starts_live(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        old = await run_job(service, "ok")
        seen: list[Event] = []
        task = asyncio.create_task(_collect(service.follow(since=None), seen))
        await asyncio.sleep(0)
        await wait_for(lambda: service.bus.subscriber_count == 1)
        new = await run_job(service, "ok")
        await wait_for(lambda: any(e.type == "run.finished" for e in seen))
        task.cancel()
        assert {e.run_id for e in seen} == {new.run_id} != {old.run_id}
        assert seen == await events_of(service, new.run_id)


async def test_a_slow_subscriber_is_cut_off_and_resumes(engine_world: EngineWorld) -> None:
    engine_world.job(
        "steady", {"command": "for i in $(seq 120); do echo line $i; sleep 0.005; done"}
    )
    async with engine_world.open() as service:
        service.bus.maxsize = 30  # so that falling behind happens quickly
        created = await service.create_run("steady", {})
        fast: list[Event] = []
        fast_task = asyncio.create_task(
            _collect(service.follow(since=0, run_id=created.run_id, until_terminal=True), fast)
        )
        slow = service.follow(since=0, run_id=created.run_id)
        first = await anext(slow)
        assert first.type == "run.created"
        seen = [first]
        # the slow reader stops reading while the run writes ~130 events
        await finish(service, created)
        with pytest.raises(SlowConsumer):
            async with asyncio.timeout(5):
                async for event in slow:
                    seen.append(event)
        async with asyncio.timeout(5):
            await fast_task

        stored = await events_of(service, created.run_id)
        assert fast == stored  # the fast reader was not affected
        # the slow one resumes from the last id it saw, with nothing lost or repeated
        rest = [
            e
            async for e in service.follow(
                since=seen[-1].id, run_id=created.run_id, until_terminal=True
            )
        ]
        assert seen + rest == stored
        assert service.bus.subscriber_count == 0


async def test_follow_of_a_finished_run_ends(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        run = await run_job(service, "ok")
        async with asyncio.timeout(3):
            events = [
                e async for e in service.follow(since=None, run_id=run.run_id, until_terminal=True)
            ]
        assert events[-1].type == "run.finished"
        assert events == await events_of(service, run.run_id)
        # resuming after the end gives nothing and still ends
        async with asyncio.timeout(3):
            after = [
                e
                async for e in service.follow(
                    since=events[-1].id, run_id=run.run_id, until_terminal=True
                )
            ]
        assert after == []
        assert (await service.get_run(run.run_id)).status is RunStatus.SUCCESS
