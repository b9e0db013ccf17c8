"""Crash recovery with real processes: an engine in another process is SIGKILLed while a
run is executing; the next engine on the same data dir marks that run `lost`, kills what
is left of it, keeps every stored event, resumes runs that never started, and works."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path

import msgspec

from flwd.engine.recovery import LOST_MESSAGE
from flwd.states import FailureReason, RunStatus, StepStatus
from tests.unit.engine_support import (
    EngineWorld,
    alive,
    finish,
    pgid_of,
    read_pids,
    run_job,
    run_processes,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]

REPO = Path(__file__).resolve().parents[2]

#: Quiet after `ready` (its output pipe dies with the worker): a main process, a
#: background child, a grandchild and an escapee in a session of its own.
LONG = """\
#!/bin/bash
echo $$ >> "$PIDS"
sleep 300 &
echo $! >> "$PIDS"
( sleep 300 & echo $! >> "$PIDS"; wait ) > /dev/null 2>&1 &
setsid bash -c 'echo $$ >> "$PIDS"; exec sleep 300' > /dev/null 2>&1 &
while [ $(wc -l < "$PIDS") -lt 4 ]; do sleep 0.01; done
echo ready
wait
"""


def _stored_events(db: Path) -> list[tuple[int, int, str, str, bytes, str | None]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT id, last_id, run_id, type, data, text FROM events ORDER BY id"
        ).fetchall()


async def _start_worker(world: EngineWorld) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.engine_worker",
        str(world.root),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    ids: dict[str, str] = {}
    async with asyncio.timeout(20):
        while (line := (await worker.stdout.readline()).decode().strip()) != "ready":
            assert line, "the worker exited before it was ready"
            ids = json.loads(line)
    return worker, ids


async def test_a_killed_engine_leaves_nothing_behind_after_restart(
    engine_world: EngineWorld,
) -> None:
    marker = engine_world.root / "short-ran"
    pid_file = engine_world.root / "pids"
    engine_world.job(
        "long",
        {"env": {"PIDS": str(pid_file)}, "steps": [{"id": "main", "script": "long.sh"}]},
        {"long.sh": LONG},
    )
    engine_world.job("short", {"command": f"echo resumed; touch {marker}"})
    engine_world.job(
        "secret",
        {
            "args": {"type": "object", "properties": {"token": {"format": "secret"}}},
            "command": "echo should not run",
        },
    )
    worker, ids = await _start_worker(engine_world)
    pids = await read_pids(pid_file, 4)
    before = _stored_events(engine_world.data_dir / "flwd.db")
    assert {row[3] for row in before} >= {"run.created", "run.started", "step.started"}

    worker.send_signal(signal.SIGKILL)
    async with asyncio.timeout(5):
        assert await worker.wait() == -signal.SIGKILL
    # the step's processes outlived the engine (they are in sessions of their own)
    assert all(alive(pid) for pid in pids)
    assert len({pgid_of(pid) for pid in pids}) == 2  # one of them escaped the group
    assert set(pids) <= set(run_processes(ids["running"]))

    async with engine_world.open(max_concurrency=1) as service:
        lost = await service.get_run(ids["running"])
        assert lost.status is RunStatus.FAILED
        assert lost.reason is FailureReason.LOST and lost.error == LOST_MESSAGE
        assert lost.finished_at is not None
        # recovery killed every process of the lost run before going on
        assert [pid for pid in pids if alive(pid)] == []
        assert run_processes(lost.run_id) == []
        (step,) = await service.list_steps(lost.run_id)
        assert step.status is StepStatus.FAILED and step.reason is FailureReason.LOST

        # every event stored before the kill is still there, with the same id
        after = _stored_events(engine_world.data_dir / "flwd.db")
        assert after[: len(before)] == before
        lost_events = [row for row in after[len(before) :] if row[2] == lost.run_id]
        assert [row[3] for row in lost_events] == ["run.finished"]
        assert msgspec.json.decode(lost_events[0][4])["reason"] == "lost"

        # the run that never started is queued again and runs
        resumed = await finish(service, ids["pending"])
        assert resumed.status is RunStatus.SUCCESS
        assert [x.message for x in await service.read_logs(resumed.run_id)] == ["resumed"]
        assert marker.exists()
        # one whose secret arguments were never stored cannot be resumed
        secret = await service.get_run(ids["secret"])
        assert secret.status is RunStatus.FAILED and secret.reason is FailureReason.LOST
        assert "secret" in (secret.error or "")
        assert secret.started_at is None

        # and the engine is fully usable: the slot of the lost run was not leaked
        assert (await run_job(service, "short")).status is RunStatus.SUCCESS
        ids_now = [e.id for e in await service.journal.read(since=0, limit=10_000)]
        assert ids_now == sorted(set(ids_now))
        # no run's room is left under its name: what remains are finished runs' rooms
        # being deleted (holding at most the arguments of a run without secrets: none here)
        work = engine_world.data_dir / "work"
        assert not [p for p in work.iterdir() if p.name.startswith("run_")]
        assert {f.read_bytes().strip() for f in work.glob("*/args.json")} <= {b"", b"{}"}
    assert not any((engine_world.data_dir / "work").iterdir())


async def test_recovery_of_a_clean_shutdown_changes_nothing(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "echo hi"})
    async with engine_world.open() as service:
        run = await run_job(service, "ok")
    before = _stored_events(engine_world.data_dir / "flwd.db")
    async with engine_world.open() as service:
        assert (await service.get_run(run.run_id)).status is RunStatus.SUCCESS
    assert _stored_events(engine_world.data_dir / "flwd.db") == before


async def test_pending_runs_survive_a_clean_shutdown(engine_world: EngineWorld) -> None:
    gate = engine_world.root / "gate"
    engine_world.job("blocker", {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    engine_world.job("later", {"command": "echo later"})
    async with engine_world.open(max_concurrency=1) as service:
        blocker = await service.create_run("blocker", {})
        later = await service.create_run("later", {})

        async def blocker_running() -> bool:
            return (await service.get_run(blocker.run_id)).status is RunStatus.RUNNING

        await wait_for(blocker_running)
    async with engine_world.open(max_concurrency=1) as service:
        assert (await service.get_run(blocker.run_id)).status is RunStatus.CANCELLED
        done = await finish(service, later)
        assert done.status is RunStatus.SUCCESS
