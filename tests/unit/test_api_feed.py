"""The batched event feed behind the SSE endpoints, and the bus it reads: batches carry
every event exactly once and in order (replay, live, resume inside a chunk of lines); a
reader that lags gets what piled up in one batch; a slow one is cut off and resumes
without touching the others; subscribers of one run cost nothing to other runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from flwd.engine.service import RunService
from flwd.events.bus import EventBus, SlowConsumer
from flwd.events.feed import EventFeed
from flwd.events.records import Record
from flwd.models import Event
from tests.unit.engine_support import EngineWorld, events_of, finish, run_job, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]

STAMP = datetime(2024, 1, 15, 10, 30, 1, tzinfo=UTC)


def record(event_id: int, run_id: str = "run_a", type_: str = "run.output") -> Record:
    return Record(
        id=event_id,
        last_id=event_id,
        run_id=run_id,
        job_id="job",
        type=type_,
        ts=STAMP,
        data={"n": event_id},
    )


async def test_take_returns_everything_queued_in_order() -> None:
    bus = EventBus()
    with bus.subscribe(run_id="run_a") as sub:
        for i in range(1, 6):
            bus.publish([record(i)])
        assert sub.pending == 5
        assert [r.id for r in await sub.take(1.0)] == [1, 2, 3, 4, 5]
        assert sub.pending == 0
        assert await sub.take(0.01) == []  # nothing more: the poll runs out


async def test_a_waiting_subscriber_wakes_on_publish_and_polls_on_time() -> None:
    bus = EventBus()
    with bus.subscribe(run_id="run_a") as sub:
        waiting = asyncio.create_task(sub.take(5.0))
        await asyncio.sleep(0)
        bus.publish([record(1), record(2, run_id="run_b"), record(3)])
        async with asyncio.timeout(1):
            assert [r.id for r in await waiting] == [1, 3]
        # many quick wake-ups share one timer; a later idle wait still ends on time
        for i in range(4, 54):
            bus.publish([record(i)])
            assert [r.id for r in await sub.take(0.2)] == [i]
        started = time.monotonic()
        assert await sub.take(0.2) == []
        assert 0.15 < time.monotonic() - started < 2.0
        started = time.monotonic()
        assert await sub.take(0.05) == []  # a shorter poll than the armed timer
        assert time.monotonic() - started < 0.15


async def test_subscribers_are_indexed_by_run() -> None:
    bus = EventBus()
    with (
        bus.subscribe(run_id="run_a") as a,
        bus.subscribe(run_id="run_b") as b,
        bus.subscribe() as everything,
        bus.subscribe(job_id="other") as other_job,
    ):
        assert bus.subscriber_count == 4
        bus.publish([record(1), record(2, run_id="run_b"), record(3, run_id="run_c")])
        assert [r.id for r in await a.take(0.1)] == [1]
        assert [r.id for r in await b.take(0.1)] == [2]
        assert [r.id for r in await everything.take(0.1)] == [1, 2, 3]
        assert other_job.pending == 0
    assert bus.subscriber_count == 0
    assert bus._by_run == {}  # closing removed the per-run index entries too


async def test_an_overflowing_subscriber_is_cut_off_alone() -> None:
    bus = EventBus(maxsize=10)
    slow = bus.subscribe(run_id="run_a")
    with bus.subscribe(run_id="run_a") as fast:
        seen: list[int] = []
        for i in range(1, 31):
            bus.publish([record(i)])
            seen.extend(r.id for r in await fast.take(0.1))
        assert seen == list(range(1, 31))
        assert slow.overflowed and slow.pending == 0  # nothing kept for it
        with pytest.raises(SlowConsumer):
            await slow.take(0.1)
        assert bus.subscriber_count == 1


async def _collect(stream: AsyncIterator[list[Event]], into: list[list[Event]]) -> None:
    async for batch in stream:
        into.append(batch)


def flat(batches: list[list[Event]]) -> list[Event]:
    return [event for batch in batches for event in batch]


def feed_of(service: RunService) -> EventFeed:
    return EventFeed(service.journal, service.run_ended)


async def test_feed_replays_then_goes_live_exactly_once(engine_world: EngineWorld) -> None:
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
        feed = feed_of(service)
        created = await service.create_run("bursts", {})

        async def early_done() -> list[Event] | None:
            events = await events_of(service, created.run_id)
            early = [e for e in events if e.data.get("message", "").startswith("early")]
            return events if len(early) == 50 else None

        before = await wait_for(early_done, what="the early lines")
        middle = before[len(before) // 2].id
        streams: dict[str, list[list[Event]]] = {"start": [], "middle": [], "default": []}
        tasks = [
            asyncio.create_task(
                _collect(
                    feed.follow(since=since, run_id=created.run_id, until_terminal=True),
                    streams[name],
                )
            )
            for name, since in (("start", 0), ("middle", middle), ("default", None))
        ]
        await asyncio.sleep(0)
        gate.touch()
        await finish(service, created)
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks)

        stored = await events_of(service, created.run_id)
        assert stored[-1].type == "run.finished"
        assert flat(streams["start"]) == stored
        assert flat(streams["default"]) == stored
        assert flat(streams["middle"]) == [e for e in stored if e.id > middle]
        assert all(streams.values()) and all(batch for s in streams.values() for batch in s)
        assert service.bus.subscriber_count == 0


async def test_a_lagging_reader_gets_what_piled_up_in_one_batch(
    engine_world: EngineWorld,
) -> None:
    gate = engine_world.root / "gate"
    engine_world.job(
        "steady",
        {
            "command": (
                f"while [ ! -e {gate} ]; do sleep 0.02; done; "
                "for i in $(seq 40); do echo line $i; sleep 0.002; done"
            )
        },
    )
    async with engine_world.open() as service:
        created = await service.create_run("steady", {})
        stream = feed_of(service).follow(since=None, run_id=created.run_id, until_terminal=True)
        seen = list(await anext(stream))  # the replay so far, then the reader stops reading
        assert seen[0].type == "run.created"
        gate.touch()
        await finish(service, created)
        rest: list[list[Event]] = []
        async with asyncio.timeout(5):
            await _collect(stream, rest)
        assert seen + flat(rest) == await events_of(service, created.run_id)
        assert len(rest) < 5, [len(batch) for batch in rest]  # not ~45 one-event batches


async def test_feed_resumes_inside_a_chunk_of_lines(engine_world: EngineWorld) -> None:
    engine_world.job("burst", {"command": "seq 1 50"})
    async with engine_world.open() as service:
        run = await run_job(service, "burst")
        lines = [e for e in await events_of(service, run.run_id) if e.type == "run.output"]
        since = lines[9].id
        batches: list[list[Event]] = []
        async with asyncio.timeout(5):
            await _collect(
                feed_of(service).follow(since=since, run_id=run.run_id, until_terminal=True),
                batches,
            )
        replay = flat(batches)
        assert [e.data.get("message") for e in replay if e.type == "run.output"] == [
            str(i) for i in range(11, 51)
        ]
        assert replay[0].id == since + 1 and replay[-1].type == "run.finished"


async def test_a_slow_feed_reader_is_cut_off_and_resumes(engine_world: EngineWorld) -> None:
    engine_world.job(
        "steady", {"command": "for i in $(seq 120); do echo line $i; sleep 0.005; done"}
    )
    async with engine_world.open() as service:
        service.bus.maxsize = 30
        feed = feed_of(service)
        created = await service.create_run("steady", {})
        fast: list[list[Event]] = []
        fast_task = asyncio.create_task(
            _collect(feed.follow(since=0, run_id=created.run_id, until_terminal=True), fast)
        )
        slow = feed.follow(since=0, run_id=created.run_id)
        seen = list(await anext(slow))
        await finish(service, created)
        with pytest.raises(SlowConsumer):
            async with asyncio.timeout(5):
                async for batch in slow:
                    seen.extend(batch)
        async with asyncio.timeout(5):
            await fast_task

        stored = await events_of(service, created.run_id)
        assert flat(fast) == stored
        rest: list[list[Event]] = []
        async with asyncio.timeout(5):
            await _collect(
                feed.follow(since=seen[-1].id, run_id=created.run_id, until_terminal=True), rest
            )
        assert seen + flat(rest) == stored
        assert service.bus.subscriber_count == 0


async def test_unfiltered_feed_starts_live(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        old = await run_job(service, "ok")
        batches: list[list[Event]] = []
        task = asyncio.create_task(_collect(feed_of(service).follow(since=None), batches))
        await wait_for(lambda: service.bus.subscriber_count == 1)
        new = await run_job(service, "ok")
        await wait_for(lambda: any(e.type == "run.finished" for e in flat(batches)))
        task.cancel()
        assert {e.run_id for e in flat(batches)} == {new.run_id} != {old.run_id}
        assert flat(batches) == await events_of(service, new.run_id)


async def test_feed_of_a_finished_run_ends(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        run = await run_job(service, "ok")
        batches: list[list[Event]] = []
        async with asyncio.timeout(5):
            await _collect(
                feed_of(service).follow(since=None, run_id=run.run_id, until_terminal=True),
                batches,
            )
        assert flat(batches) == await events_of(service, run.run_id)
        last = flat(batches)[-1].id
        after: list[list[Event]] = []
        async with asyncio.timeout(5):  # resuming after the end: nothing, and it ends
            await _collect(
                feed_of(service).follow(since=last, run_id=run.run_id, until_terminal=True),
                after,
            )
        assert after == []


async def test_idle_rechecks_of_the_store_lose_and_repeat_nothing(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("pause", {"command": "echo before; sleep 0.4; echo after"})
    async with engine_world.open() as service:
        created = await service.create_run("pause", {})
        feed = EventFeed(service.journal, service.run_ended, idle_recheck=0.02)
        batches: list[list[Event]] = []
        async with asyncio.timeout(5):  # ~20 idle rechecks while the job sleeps
            await _collect(
                feed.follow(since=None, run_id=created.run_id, until_terminal=True), batches
            )
        assert flat(batches) == await events_of(service, created.run_id)
        assert flat(batches)[-1].type == "run.finished"


async def test_a_subscriber_holding_too_many_bytes_of_output_is_cut_off() -> None:
    bus = EventBus(maxbytes=100_000)

    def chunk(event_id: int) -> Record:
        return Record(
            id=event_id,
            last_id=event_id,
            run_id="run_a",
            job_id="job",
            type="run.output",
            ts=STAMP,
            data={},
            text="x" * 30_000,
        )

    with bus.subscribe(run_id="run_a") as stalled, bus.subscribe(run_id="run_a") as reader:
        for i in range(1, 4):  # 3 x 30 kB: within the bound
            bus.publish([chunk(i)])
        assert stalled.pending == 3 and not stalled.overflowed
        assert [r.id for r in await reader.take(0.1)] == [1, 2, 3]
        bus.publish([chunk(4)])  # 120 kB queued for the stalled one: cut off, not held
        assert stalled.overflowed and stalled.pending == 0
        with pytest.raises(SlowConsumer):
            await stalled.take(0.1)
        assert [r.id for r in await reader.take(0.1)] == [4]  # the reader kept up
