"""How a step's process is started and watched: `posix_spawn` off the loop's thread (or
`Popen` where glibc lacks what it needs), its exit seen through its pipes, its pidfd or, with
no pidfds, by polling. Every way gives the step the same process."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flwd.engine import spawn, step_process
from flwd.states import RunStatus
from tests.unit.engine_support import (
    EngineWorld,
    alive,
    finish,
    pgid_of,
    process_state,
    read_pids,
    run_job,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]


@pytest.fixture(params=["posix_spawn on the loop", "posix_spawn on a thread", "popen"])
def spawn_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "popen":
        monkeypatch.setattr(spawn._libc, "usable", False)
    else:
        assert spawn._libc.usable, "glibc's posix_spawn should be usable on this machine"
    if request.param == "posix_spawn on a thread":
        # as if other steps were running and spawns had been slow lately (a lone step,
        # or any while spawns are quick, is spawned on the loop's thread)
        real = spawn.spawn

        async def busy(*args: Any, **kwargs: Any) -> int:
            return await real(*args, **{**kwargs, "busy": True})

        monkeypatch.setattr(step_process, "spawn", busy)
        monkeypatch.setattr(spawn.spawn_times, "quick", lambda: False)
    yield request.param


async def test_the_step_process_is_the_same_either_way(
    engine_world: EngineWorld, spawn_way: str
) -> None:
    # its own session, the run dir as cwd, exactly the environment flwd built, only the
    # three standard descriptors, and the exit code
    engine_world.job(
        "probe",
        {
            "env": {"GREETING": "hello"},
            "command": (
                'echo "sid=$(ps -o sid= -p $$ | tr -d " ") pid=$$"; echo "cwd=$(pwd)"; '
                'echo "greeting=$GREETING"; ls /proc/self/fd | tr "\\n" " "; echo; '
                "echo to-stderr >&2; exit 7"
            ),
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "probe")
        assert run.status is RunStatus.FAILED and run.exit_code == 7, run.error
        logs = await service.read_logs(run.run_id)
        out = [x.message for x in logs if x.level == "info"]
        sid, pid = (part.split("=")[1] for part in out[0].split())
        assert sid == pid
        assert out[1] == f"cwd={engine_world.data_dir / 'work' / run.run_id / 'run'}"
        assert out[2] == "greeting=hello"
        assert out[3].split() == ["0", "1", "2", "3"]  # 3 is ls's own listing of the dir
        assert [x.message for x in logs if x.level == "error"] == ["to-stderr"]


async def test_signals_the_server_ignores_are_default_again_in_the_step(
    engine_world: EngineWorld, spawn_way: str
) -> None:
    # Python ignores SIGPIPE; a shell that inherited that could not be killed by it
    engine_world.job("pipe", {"command": "kill -PIPE $$; echo survived"})
    async with engine_world.open() as service:
        run = await run_job(service, "pipe")
        assert run.status is RunStatus.FAILED and run.signal == 13, run.error
        assert [x.message for x in await service.read_logs(run.run_id)] == []


async def test_a_program_name_is_looked_up_in_the_steps_path(
    engine_world: EngineWorld, spawn_way: str
) -> None:
    bin_dir = engine_world.root / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "flwd-test-tool"
    tool.write_text("#!/bin/sh\necho tool ran with $1\n")
    tool.chmod(0o755)
    engine_world.job(
        "tool",
        {"env": {"PATH": f"{bin_dir}:/usr/bin:/bin"}, "command": ["flwd-test-tool", "x y"]},
    )
    engine_world.job("missing", {"command": ["flwd-no-such-program", "x"]})
    async with engine_world.open() as service:
        run = await run_job(service, "tool")
        assert run.status is RunStatus.SUCCESS, run.error
        assert [x.message for x in await service.read_logs(run.run_id)] == ["tool ran with x y"]
        run = await run_job(service, "missing")
        assert run.status is RunStatus.FAILED
        assert run.error is not None
        assert "cannot start 'flwd-no-such-program': No such file or directory" in run.error


@pytest.fixture(params=["pidfd", "polling"])
def exit_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "polling":

        def no_pidfds(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

        monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    yield request.param


async def test_a_step_that_closes_its_output_and_runs_on_is_waited_for(
    engine_world: EngineWorld, exit_watch: str
) -> None:
    # its pipes close at once: its exit is then watched, not assumed
    engine_world.job("quiet", {"command": "exec >&- 2>&-; sleep 0.4; exit 4"})
    async with engine_world.open() as service:
        run = await run_job(service, "quiet")
        assert run.status is RunStatus.FAILED and run.exit_code == 4, run.error
        elapsed = (run.finished_at - run.started_at).total_seconds()  # type: ignore[operator]
        assert elapsed >= 0.4


async def test_the_exit_is_seen_while_a_child_holds_the_pipes(
    engine_world: EngineWorld, exit_watch: str
) -> None:
    # the main process exits, its background child keeps the pipes open: the exit is seen
    # all the same (after `_WATCH_EXIT_AFTER`, through the pidfd or by polling), and the
    # child is stopped
    engine_world.job("holds", {"command": "sleep 300 & echo main done; exit 5"})
    async with engine_world.open(kill_grace=1) as service:
        run = await run_job(service, "holds", timeout=10)
        assert run.status is RunStatus.FAILED and run.exit_code == 5, run.error
        elapsed = (run.finished_at - run.started_at).total_seconds()  # type: ignore[operator]
        assert elapsed < 5
        assert [x.message for x in await service.read_logs(run.run_id)] == ["main done"]
    assert engine_world.processes() == []


async def test_a_spawn_given_up_midway_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # the caller is cancelled while the spawn runs on its thread: the process starts all
    # the same, and is killed and reaped rather than left running unwatched
    handled: list[int] = []
    settle = spawn._spawner._settle

    def recording(future: asyncio.Future[int], pid: int | None, error: object) -> None:
        settle(future, pid, error)  # type: ignore[arg-type]
        if pid is not None:
            handled.append(pid)

    monkeypatch.setattr(spawn._spawner, "_settle", recording)
    monkeypatch.setattr(spawn.spawn_times, "quick", lambda: False)  # to a worker thread
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        task = asyncio.ensure_future(
            spawn.spawn(["/bin/sleep", "300"], cwd="/", env={}, fds=(devnull, devnull, devnull))
        )
        await asyncio.sleep(0)  # handed to its thread, then given up
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (pid,) = await wait_for(lambda: handled, what="the orphan to be handled")
        await wait_for(lambda: process_state(pid) is None, what="the orphan to be reaped")
    finally:
        os.close(devnull)


def test_pids_the_caller_reaps_are_forgotten_by_popen(monkeypatch: pytest.MonkeyPatch) -> None:
    # a Popen object must not outlive its process's reaping (it would reap it itself)
    monkeypatch.setattr(spawn._libc, "usable", False)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = asyncio.run(
            spawn.spawn(["/bin/true"], cwd="/", env={}, fds=(devnull, devnull, devnull))
        )
    finally:
        os.close(devnull)
    assert pid in spawn._popens
    _, status = os.waitpid(pid, 0)
    spawn.reaped(pid, os.waitstatus_to_exitcode(status))
    assert pid not in spawn._popens
    assert not alive(pid)


async def test_processes_escaping_a_step_are_found_whichever_thread_spawned_it(
    engine_world: EngineWorld, spawn_way: str
) -> None:
    # a step spawned from a worker thread is that thread's child, but what it leaves
    # behind is re-parented to the engine's main thread, where the search looks
    pids = engine_world.root / "escaped.pid"
    engine_world.job(
        "daemonizes",
        {
            "command": (
                f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300' > /dev/null 2>&1 & "
                f"while [ ! -s {pids} ]; do sleep 0.01; done"
            )
        },
    )
    async with engine_world.open(kill_grace=1) as service:
        run = await run_job(service, "daemonizes")
        assert run.status is RunStatus.SUCCESS, run.error
        (escaped,) = await read_pids(pids)
        assert process_state(escaped) is None  # stopped and reaped


async def test_a_null_byte_in_the_command_fails_the_step_clearly(
    engine_world: EngineWorld, spawn_way: str
) -> None:
    engine_world.job("nul", {"command": ["/bin/echo", "a\0b"]})
    async with engine_world.open() as service:
        run = await run_job(service, "nul")
        assert run.status is RunStatus.FAILED and run.reason is not None
        assert run.reason.value == "error"
        assert run.error is not None and "embedded null byte" in run.error


async def test_a_running_steps_process_group_is_stored_for_crash_recovery(
    engine_world: EngineWorld,
) -> None:
    # stored once the step has run a while, cleared when it ends
    gate = engine_world.root / "gate"
    engine_world.job("waits", {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    async with engine_world.open() as service:
        run = await service.create_run("waits", {})
        pgids = await wait_for(
            lambda: service.repo.step_pgids(run.run_id), what="the process group to be stored"
        )
        # a `sleep 0.02` child may end between being listed and being looked at (None)
        assert {pgid_of(pid) for pid in engine_world.processes()} - {None} == set(pgids)
        gate.touch()
        await finish(service, run)
        assert await service.repo.step_pgids(run.run_id) == []


def test_spawns_while_steps_run_go_to_threads_while_they_are_slow() -> None:
    times = spawn.SpawnTimes(limit=0.003, size=8)
    assert times.quick()  # nothing measured yet
    for _ in range(5):
        times.note(0.0009)  # a CPU for each child: about a millisecond
    times.note(0.030)  # one slow spawn does not move the median
    assert times.quick()
    for _ in range(5):
        times.note(0.007)  # beside CPU-bound processes: the child waits for a CPU
    assert not times.quick()
    for _ in range(8):
        times.note(0.0012)  # measured on the worker threads: quick again
    assert times.quick()


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "slow"])
async def test_a_spawn_while_others_run_is_timed_where_it_is_made(
    monkeypatch: pytest.MonkeyPatch, quick: bool
) -> None:
    times = spawn.SpawnTimes(limit=float("inf") if quick else 0.0)
    times.note(0.001)
    monkeypatch.setattr(spawn, "spawn_times", times)
    made_on: list[bool] = []

    def place(pid: int) -> None:
        made_on.append(threading.current_thread() is threading.main_thread())

    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = await spawn.spawn(
            ["/bin/true"], cwd="/", env={}, fds=(devnull, devnull, devnull), busy=True, place=place
        )
        await asyncio.to_thread(os.waitpid, pid, 0)
    finally:
        os.close(devnull)
    assert made_on == [quick]  # on the loop's thread while quick, else on a worker
    assert len(times.recent) == 2 and 0 < times.recent[-1] < 1
