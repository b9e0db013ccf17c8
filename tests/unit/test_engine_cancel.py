"""Cancel and timeout: TERM to the whole group, a grace period, KILL, and the run turns
terminal only once no process of it remains — grandchildren, TERM-ignoring children and
processes that escaped the group with `setsid` included."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from flwd.errors import RunNotCancellable
from flwd.states import FailureReason, RunStatus, StepStatus
from tests.unit.engine_support import (
    EngineWorld,
    alive,
    events_of,
    finish,
    pgid_of,
    read_pids,
    run_processes,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]

#: A step that spreads out: a background child, a grandchild, a child that ignores
#: SIGTERM, and a process that leaves the step's session and group with `setsid` (and
#: keeps the output pipe open). Every one writes its pid to $PIDS.
NASTY = """\
#!/bin/bash
sleep 300 &
echo $! >> "$PIDS"
( sleep 300 & echo $! >> "$PIDS"; wait ) &
bash -c 'trap "" TERM; echo $$ >> "$PIDS"; while true; do sleep 0.05; done' &
setsid bash -c 'echo $$ >> "$PIDS"; exec sleep 300' &
echo ready
wait
"""
NASTY_PROCESSES = 4


async def _started_nasty(world: EngineWorld, service, run_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    async def ready() -> bool:
        return any(x.message == "ready" for x in await service.read_logs(run_id))

    await wait_for(ready, what="the step to be ready")
    pids = await read_pids(world.root / "pids", NASTY_PROCESSES)
    for pid in pids:
        assert alive(pid), f"{pid} should be running"
    # they all belong to the run, by the same test the engine uses after a crash...
    assert set(pids) <= set(run_processes(run_id))
    # ...and one of them really left the step's process group
    assert len({pgid_of(pid) for pid in pids}) == 2
    return pids


@pytest.mark.parametrize("how", ["cancel", "run-timeout"])
async def test_no_process_survives_cancel_or_timeout(engine_world: EngineWorld, how: str) -> None:
    config = {
        "env": {"PIDS": str(engine_world.root / "pids")},
        "steps": [{"id": "main", "script": "nasty.sh"}],
    }
    if how == "run-timeout":
        config["timeout"] = "1500ms"
    engine_world.job("nasty", config, {"nasty.sh": NASTY})
    async with engine_world.open(kill_grace=0.5) as service:
        created = await service.create_run("nasty", {})
        pids = await _started_nasty(engine_world, service, created.run_id)

        if how == "cancel":
            run = await service.cancel_run(created.run_id)
            assert run.status is RunStatus.CANCELLED
            assert run.reason is None
        else:
            run = await finish(service, created)
            assert run.status is RunStatus.FAILED
            assert run.reason is FailureReason.TIMEOUT

        # the moment the engine reports the run over, nothing of it is left
        survivors = [pid for pid in pids if alive(pid)]
        assert survivors == []
        assert run_processes(run.run_id) == []
        assert engine_world.processes() == []

        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.CANCELLED
        assert step.signal == signal.SIGTERM  # bash itself obeyed TERM
        types = [e.type for e in await events_of(service, run.run_id)]
        assert types[-1] == "run.finished"
        assert ("run.cancelled" in types) is (how == "cancel")


async def test_term_ignoring_process_is_killed_after_the_grace_period(
    engine_world: EngineWorld,
) -> None:
    grace = 1.0
    pid_file = engine_world.root / "pid"
    engine_world.job(
        "stubborn",
        {
            "command": (
                f"trap '' TERM; echo $$ > {pid_file}; echo ready; while true; do sleep 0.05; done"
            )
        },
    )
    async with engine_world.open(kill_grace=grace) as service:
        created = await service.create_run("stubborn", {})
        (pid,) = await read_pids(pid_file)

        died_at: list[float] = []

        async def watch() -> None:
            await wait_for(lambda: not alive(pid), timeout=5, interval=0.01)
            died_at.append(time.monotonic())

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        run = await service.cancel_run(created.run_id)
        async with asyncio.timeout(5):
            await watcher
        lived = died_at[0] - started
        assert grace * 0.9 <= lived < grace + 2.0, lived
        assert run.status is RunStatus.CANCELLED
        (step,) = await service.list_steps(run.run_id)
        assert step.signal == signal.SIGKILL


async def test_a_process_that_obeys_term_does_not_wait_for_the_grace(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("sleeper", {"command": "echo ready; sleep 300"})
    async with engine_world.open(kill_grace=5.0) as service:
        created = await service.create_run("sleeper", {})

        async def ready() -> bool:
            return any(x.message == "ready" for x in await service.read_logs(created.run_id))

        await wait_for(ready)
        started = time.monotonic()
        run = await service.cancel_run(created.run_id)
        assert time.monotonic() - started < 2.0
        assert run.status is RunStatus.CANCELLED


async def test_cancel_stops_the_dag_and_cancels_steps_not_yet_started(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "two-steps",
        {
            "steps": [
                {"id": "first", "run": "echo ready; sleep 300"},
                {"id": "second", "run": "echo never", "needs": ["first"]},
            ]
        },
    )
    async with engine_world.open() as service:
        created = await service.create_run("two-steps", {})

        async def ready() -> bool:
            return any(x.message == "ready" for x in await service.read_logs(created.run_id))

        await wait_for(ready)
        # two cancels at once: both wait for the end, one `run.cancelled` is recorded
        first, second = await asyncio.gather(
            service.cancel_run(created.run_id), service.cancel_run(created.run_id)
        )
        assert first.status is second.status is RunStatus.CANCELLED
        steps = {s.step_id: s for s in await service.list_steps(created.run_id)}
        assert steps["first"].status is StepStatus.CANCELLED
        assert steps["second"].status is StepStatus.CANCELLED
        assert steps["second"].started_at is None
        messages = [x.message for x in await service.read_logs(created.run_id)]
        assert "never" not in messages
        types = [e.type for e in await events_of(service, created.run_id)]
        assert types.count("run.cancelled") == 1 and types.count("run.finished") == 1
        with pytest.raises(RunNotCancellable):
            await service.cancel_run(created.run_id)


async def test_closing_the_engine_cancels_running_runs(engine_world: EngineWorld) -> None:
    pid_file = engine_world.root / "pid"
    engine_world.job("sleeper", {"command": f"echo $$ > {pid_file}; sleep 300"})
    async with engine_world.open() as service:
        created = await service.create_run("sleeper", {})
        (pid,) = await read_pids(pid_file)
    assert not alive(pid)
    async with engine_world.open() as service:
        run = await service.get_run(created.run_id)
        assert run.status is RunStatus.CANCELLED
        assert "shut down" in (run.error or "")
