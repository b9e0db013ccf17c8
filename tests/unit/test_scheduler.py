"""Admission: the global limit, per-job limits keyed by an argument, FIFO waiting, a
maximum queue depth, cancelling waiting runs, and slots that are always given back."""

from __future__ import annotations

import asyncio

import pytest

from flwd.engine.service import RunService
from flwd.errors import QueueFull
from flwd.models import Run
from flwd.states import RunStatus
from tests.unit.engine_support import EngineWorld, events_of, finish, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]

#: Registers itself as running, records how many runs were running at that moment,
#: waits for the gate, then unregisters.
COUNTED = """\
mkdir -p "$BOARD"
touch "$BOARD/$FLWD_RUN_ID"
ls "$BOARD" | wc -l >> "$BOARD.counts"
while [ ! -e "$GATE" ]; do sleep 0.02; done
sleep 0.05
rm "$BOARD/$FLWD_RUN_ID"
"""


def _counted_job(world: EngineWorld, job_id: str, **extra: object) -> None:
    config = {
        "env": {"BOARD": str(world.root / "board"), "GATE": str(world.root / "gate")},
        "steps": [{"id": "main", "run": COUNTED}],
        **extra,
    }
    world.job(job_id, config)


async def _status(service: RunService, run: Run) -> RunStatus:
    return (await service.get_run(run.run_id)).status


async def _all_running(service: RunService, runs: list[Run]) -> bool:
    return all([await _status(service, r) is RunStatus.RUNNING for r in runs])


async def test_global_limit(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "work")
    async with engine_world.open(max_concurrency=2) as service:
        runs = [await service.create_run("work", {}) for _ in range(6)]
        await wait_for(lambda: _all_running(service, runs[:2]))
        assert [await _status(service, r) for r in runs[2:]] == [RunStatus.PENDING] * 4
        (engine_world.root / "gate").touch()
        done = [await finish(service, r) for r in runs]
        assert all(r.status is RunStatus.SUCCESS for r in done)
    counts = [int(x) for x in (engine_world.root / "board.counts").read_text().split()]
    assert len(counts) == 6
    assert max(counts) == 2  # never more than two at once, and the two slots were used


async def test_per_job_limit_by_key(engine_world: EngineWorld) -> None:
    _counted_job(
        engine_world,
        "deploy",
        args={"type": "object", "properties": {"target": {"type": "string"}}},
        concurrency={"limit": 1, "key": "{target}"},
    )
    async with engine_world.open(max_concurrency=10) as service:
        prod_1 = await service.create_run("deploy", {"target": "prod"})
        prod_2 = await service.create_run("deploy", {"target": "prod"})
        stage = await service.create_run("deploy", {"target": "stage"})
        # different keys run together, the same key waits
        await wait_for(lambda: _all_running(service, [prod_1, stage]))
        assert await _status(service, prod_2) is RunStatus.PENDING
        (engine_world.root / "gate").touch()
        first = await finish(service, prod_1)
        second = await finish(service, prod_2)
        await finish(service, stage)
        assert second.started_at >= first.finished_at  # type: ignore[operator]


async def test_a_job_at_its_limit_does_not_block_other_jobs(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "single", concurrency=1)
    _counted_job(engine_world, "other")
    async with engine_world.open(max_concurrency=3) as service:
        a = await service.create_run("single", {})
        b = await service.create_run("single", {})  # waits for a
        c = await service.create_run("other", {})  # queued behind b, starts anyway
        await wait_for(lambda: _all_running(service, [a, c]))
        assert await _status(service, b) is RunStatus.PENDING
        (engine_world.root / "gate").touch()
        for run in (a, b, c):
            assert (await finish(service, run)).status is RunStatus.SUCCESS


async def test_waiting_runs_start_in_fifo_order(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "work")
    async with engine_world.open(max_concurrency=1) as service:
        blocker = await service.create_run("work", {})
        waiting = [await service.create_run("work", {}) for _ in range(5)]
        await wait_for(lambda: _all_running(service, [blocker]))
        (engine_world.root / "gate").touch()
        for run in waiting:
            await finish(service, run)
        started = [
            e.run_id
            for e in await service.journal.read(since=0, limit=10_000)
            if e.type == "run.started"
        ]
        assert started == [blocker.run_id] + [r.run_id for r in waiting]


async def test_queue_depth_is_bounded(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "work")
    async with engine_world.open(max_concurrency=1, max_queue=2) as service:
        running = await service.create_run("work", {})
        queued = [await service.create_run("work", {}) for _ in range(2)]
        with pytest.raises(QueueFull) as caught:
            await service.create_run("work", {})
        assert caught.value.retry_after >= 1 and caught.value.depth == 2
        _, total = await service.list_runs()
        assert total == 3  # the refused run left no trace
        (engine_world.root / "gate").touch()
        for run in [running, *queued]:
            await finish(service, run)
        # room again once the queue drained
        await finish(service, await service.create_run("work", {}))


async def test_cancelling_a_waiting_run_never_starts_it(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "work")
    async with engine_world.open(max_concurrency=1) as service:
        blocker = await service.create_run("work", {})
        doomed = await service.create_run("work", {})
        after = await service.create_run("work", {})
        cancelled = await service.cancel_run(doomed.run_id)
        assert cancelled.status is RunStatus.CANCELLED
        assert cancelled.started_at is None and cancelled.finished_at is not None
        (engine_world.root / "gate").touch()
        await finish(service, blocker)
        assert (await finish(service, after)).status is RunStatus.SUCCESS
        types = [e.type for e in await events_of(service, doomed.run_id)]
        assert types == ["run.created", "run.cancelled", "run.finished"]
        (step,) = await service.list_steps(doomed.run_id)
        assert step.status == "cancelled" and step.started_at is None
    counts = (engine_world.root / "board.counts").read_text().split()
    assert len(counts) == 2  # the cancelled run's process never ran


async def test_cancelling_a_waiting_run_twice_at_once(engine_world: EngineWorld) -> None:
    _counted_job(engine_world, "work")
    async with engine_world.open(max_concurrency=1) as service:
        blocker = await service.create_run("work", {})
        doomed = await service.create_run("work", {})
        # a double click, a retried request: both calls see the run end cancelled
        first, second, waited = await asyncio.gather(
            service.cancel_run(doomed.run_id),
            service.cancel_run(doomed.run_id),
            service.wait_run(doomed.run_id, 5),
        )
        assert first.status is second.status is waited.status is RunStatus.CANCELLED
        types = [e.type for e in await events_of(service, doomed.run_id)]
        assert types == ["run.created", "run.cancelled", "run.finished"]
        (engine_world.root / "gate").touch()
        await finish(service, blocker)


async def test_slots_are_given_back_after_failures_cancels_and_timeouts(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("fails", {"command": "exit 1"})
    engine_world.job("hangs", {"command": "echo ready; sleep 300"})
    engine_world.job("times-out", {"timeout": "200ms", "command": "sleep 300"})
    engine_world.job("broken-result", {"command": "echo '{' > \"$FLWD_RESULT_FILE\""})
    engine_world.job("ok", {"command": "true"}, {})
    async with engine_world.open(max_concurrency=2) as service:
        failing = [await service.create_run("fails", {}) for _ in range(8)]
        failing += [await service.create_run("broken-result", {}) for _ in range(2)]
        failing += [await service.create_run("times-out", {}) for _ in range(2)]
        for run in failing:
            assert (await finish(service, run)).status is RunStatus.FAILED
        hanging = [await service.create_run("hangs", {}) for _ in range(4)]
        await wait_for(lambda: _all_running(service, hanging[:2]))
        await asyncio.gather(*(service.cancel_run(r.run_id) for r in hanging))
        assert service.scheduler.running() == [] and service.scheduler.pending() == []
        fresh = [await service.create_run("ok", {}) for _ in range(4)]
        done = await asyncio.gather(*(finish(service, r) for r in fresh))
        assert all(r.status is RunStatus.SUCCESS for r in done)
