"""No process outlives its run, in both containment modes (a cgroup v2 per run, and the
child subreaper alone), with real engines and real processes: escapes that leave the
process group and wipe the environment, double-fork daemons, cancel, a crashed engine's
leftovers, and lost runs stopped all at once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flwd.engine import spawn as spawns
from flwd.engine import step_process
from flwd.engine.containment import Containment, ContainmentUnavailable
from flwd.engine.processes import adopt_orphans
from flwd.settings import SettingsError, load_settings
from flwd.states import FailureReason, RunStatus
from tests.unit.engine_support import (
    EngineWorld,
    alive,
    finish,
    read_pids,
    run_job,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]

REPO = Path(__file__).resolve().parents[2]

#: forks, starts a session, forks again, and the middle process exits: the classic daemon,
#: which also drops every FLWD_* variable from its environment
DAEMON = """\
import os, sys, time
if os.fork():
    sys.exit(0)
os.setsid()
if os.fork():
    os._exit(0)
for name in [n for n in os.environ if n.startswith("FLWD_")]:
    del os.environ[name]
os.execve("/bin/sh", ["sh", "-c", f"echo $$ >> {sys.argv[1]}; exec /bin/sleep 1005"], {})
"""


def _escapes(pids: Path, daemon: Path, then: str) -> str:
    """A step that starts a `setsid env -i` escapee and a double-fork daemon (the script
    `daemon`), waits until both wrote their pid, then runs `then`."""
    return (
        f"( setsid env -i /bin/sh -c 'echo $$ >> {pids}; exec /bin/sleep 1004' "
        "> /dev/null 2>&1 & ) ; "
        f"{sys.executable} {daemon} {pids} > /dev/null 2>&1 ; "
        f'while [ "$(wc -l < {pids})" -lt 2 ]; do sleep 0.01; done ; {then}'
    )


def _cgroup_available(tmp_path: Path) -> bool:
    try:
        Containment.choose("cgroup", tmp_path).close()
    except ContainmentUnavailable:
        return False
    return True


@pytest.fixture(params=["cgroup", "subreaper"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "cgroup" and not _cgroup_available(tmp_path / "probe"):
        pytest.skip("this machine gives the server no cgroup v2 it can write")
    return str(request.param)


@contextlib.contextmanager
def killed_at_exit(path: Path) -> Iterator[None]:
    """Whatever the test's outcome, SIGKILL the pids its jobs wrote to `path` (processes
    without FLWD_* variables, which the engine fixture's own clean-up cannot recognise)."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            for pid in [int(x) for x in path.read_text().split() if x.isdigit()]:
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def test_escaped_processes_are_stopped_when_the_run_ends(
    engine_world: EngineWorld, mode: str
) -> None:
    pids = engine_world.root / "escaped.pid"
    pids.touch()
    daemon = engine_world.jobs_dir / "escapes" / "daemon.py"
    command = _escapes(pids, daemon, "exit 0")
    engine_world.job("escapes", {"command": command}, {"daemon.py": DAEMON})
    with killed_at_exit(pids):
        async with engine_world.open(kill_grace=1, containment=mode) as service:
            assert service.containment_info().mode == mode
            run = await run_job(service, "escapes", timeout=15)
            assert run.status is RunStatus.SUCCESS, run.error
            escaped = await read_pids(pids, 2)
            # gone by the time the run is reported over, not merely soon after
            assert [pid for pid in escaped if alive(pid)] == []


async def test_escaped_processes_are_stopped_on_cancel(
    engine_world: EngineWorld, mode: str
) -> None:
    pids = engine_world.root / "escaped.pid"
    pids.touch()
    daemon = engine_world.jobs_dir / "escapes" / "daemon.py"
    command = _escapes(pids, daemon, "exec sleep 300")
    engine_world.job("escapes", {"command": command}, {"daemon.py": DAEMON})
    with killed_at_exit(pids):
        async with engine_world.open(kill_grace=1, containment=mode) as service:
            created = await service.create_run("escapes", {})
            escaped = await read_pids(pids, 2, timeout=10)
            assert all(alive(pid) for pid in escaped)
            await service.cancel_run(created.run_id)
            run = await finish(service, created, timeout=15)
            assert run.status is RunStatus.CANCELLED
            assert [pid for pid in escaped if alive(pid)] == []


async def test_a_wiped_escapee_outlives_its_run_only_while_another_run_may_own_it(
    engine_world: EngineWorld,
) -> None:
    # subreaper mode: an escapee without FLWD_RUN_ID found while two runs are active may
    # be of either; it is stopped once the other one has ended too
    pids = engine_world.root / "escaped.pid"
    pids.touch()
    gate = engine_world.root / "gate"
    engine_world.job(
        "wipes",
        {
            "command": (
                f"( setsid env -i /bin/sh -c 'echo $$ >> {pids}; exec /bin/sleep 1007' "
                f"> /dev/null 2>&1 & ) ; while [ ! -s {pids} ]; do sleep 0.01; done"
            )
        },
    )
    engine_world.job("waits", {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    with killed_at_exit(pids):
        async with engine_world.open(kill_grace=1, containment="subreaper") as service:
            other = await service.create_run("waits", {})
            run = await run_job(service, "wipes")
            assert run.status is RunStatus.SUCCESS, run.error
            (escapee,) = await read_pids(pids)
            assert alive(escapee)  # it may be the other run's
            gate.touch()
            assert (await finish(service, other)).status is RunStatus.SUCCESS
            assert not alive(escapee)


@pytest.mark.parametrize("busy", [False, True], ids=["spawned on the loop", "on a thread"])
async def test_the_cgroup_of_each_run_is_removed_with_it(
    engine_world: EngineWorld, busy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _cgroup_available(engine_world.root / "probe"):
        pytest.skip("this machine gives the server no cgroup v2 it can write")
    # a lone step is spawned and placed on the loop's thread; with others running while
    # spawns are slow, on a worker thread: in its run's cgroup either way
    spawned: list[bool] = []
    real = step_process.spawn

    async def spawn(*args: Any, **kwargs: Any) -> int:
        spawned.append(kwargs["busy"])
        return await real(*args, **{**kwargs, "busy": busy})

    monkeypatch.setattr(step_process, "spawn", spawn)
    monkeypatch.setattr(spawns.spawn_times, "quick", lambda: False)
    # (`sleep` first: a child forked before the move prints the cgroup it was born in)
    engine_world.job("cgroup", {"command": "sleep 0.2; cat /proc/$$/cgroup /proc/self/cgroup"})
    async with engine_world.open(containment="cgroup") as service:
        info = service.containment_info()
        assert info.mode == "cgroup" and info.path is not None
        root = Path(info.path)
        run = await run_job(service, "cgroup")
        assert run.status is RunStatus.SUCCESS, run.error
        lines = [x.message for x in await service.read_logs(run.run_id)]
        # a process the step started was in the run's cgroup, which is gone now
        # the step itself and a process it started were in the run's cgroup, gone now
        placed = [line for line in lines if line.endswith(f"/{root.name}/run-{run.run_id}")]
        assert len(placed) == 2, lines
        assert not (root / f"run-{run.run_id}").exists()
        assert spawned == [False]  # the lone step would have been spawned on the loop
    assert not root.exists()


async def _start_worker(world: EngineWorld, mode: str, count: int) -> list[str]:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.containment_worker",
        str(world.root),
        mode,
        str(count),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    ids: list[str] = []
    try:
        async with asyncio.timeout(30):
            while (line := (await worker.stdout.readline()).decode().strip()) != "ready":
                assert line, "the worker exited before it was ready"
                ids = json.loads(line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGKILL)
        await worker.wait()
    return ids


async def test_lost_runs_ignoring_sigterm_are_stopped_in_about_one_grace_period(
    engine_world: EngineWorld, mode: str
) -> None:
    # six runs whose processes ignore SIGTERM, left by an engine killed with SIGKILL: the
    # next engine stops them all at once, so it is ready after about one grace period
    # (one after another it would take six). In cgroup mode each run also left an
    # escapee that wiped its environment, which only the run's cgroup still finds.
    count, grace = 6, 1.5
    pids = engine_world.root / "pids"
    pids.touch()
    escapee = (
        f'( setsid env -i /bin/sh -c \'trap "" TERM; echo $$ >> {pids}; '
        "exec /bin/sleep 1006' > /dev/null 2>&1 & ) ; "
    )
    per_run = 2 if mode == "cgroup" else 1
    (engine_world.root / "expected").write_text(str(count * per_run))
    engine_world.job(
        "stubborn",
        {
            "command": (
                f"trap '' TERM; {escapee if mode == 'cgroup' else ''}"
                f"echo $$ >> {pids}; exec sleep 300"
            )
        },
    )
    with killed_at_exit(pids):
        ids = await _start_worker(engine_world, mode, count)
        left = await read_pids(pids, count * per_run)
        assert len(ids) == count and all(alive(pid) for pid in left)

        started = time.monotonic()
        async with engine_world.open(kill_grace=grace, containment=mode) as service:
            took = time.monotonic() - started
            # a bound on the algorithm (all at once), not a speed target
            assert took < 2 * grace + 2, f"recovery took {took:.1f}s"
            # SIGKILLed: gone at once, or within moments on a loaded machine (the kernel
            # finishes a killed process's exit asynchronously)
            await wait_for(
                lambda: not [pid for pid in left if alive(pid)], timeout=3, what="all stopped"
            )
            for run_id in ids:
                lost = await service.get_run(run_id)
                assert lost.status is RunStatus.FAILED and lost.reason is FailureReason.LOST
            if mode == "cgroup":
                # the crashed worker's cgroup directory (and its runs') is gone
                root = Path(service.containment_info().path or "")
                ours = root.name.rsplit("-", 1)[0]
                assert list(root.parent.glob(f"{ours}-*")) == [root]
                assert list(root.glob("run-*")) == []
        await wait_for(lambda: not [pid for pid in left if alive(pid)], what="no leftover")


#: forks a child in a session of its own, prints its pid and exits: the child is orphaned
#: at once, re-parented to the engine (the subreaper), in the engine's own cgroup
ORPHANS_A_CHILD = """\
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
"""


def test_a_process_orphaned_before_its_step_was_moved_is_taken_in_too(tmp_path: Path) -> None:
    # a step may fork and orphan a child in the moment between its spawn and its move
    # into the run's cgroup: the child, adopted by the engine, is moved in as well
    if not _cgroup_available(tmp_path / "probe"):
        pytest.skip("this machine gives the server no cgroup v2 it can write")
    assert adopt_orphans()
    containment = Containment.choose("cgroup", tmp_path)
    cgroup = containment.run_cgroup("run_orphans")
    assert cgroup is not None
    made = subprocess.run(
        [sys.executable, "-c", ORPHANS_A_CHILD], capture_output=True, check=True, timeout=30
    )
    orphan = int(made.stdout)
    step = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        cgroup.place(step.pid)
        assert sorted(cgroup.pids()) == sorted([step.pid, orphan])
    finally:
        for pid in (step.pid, orphan):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        step.wait(10)
        os.waitpid(orphan, 0)  # the engine's child now
        cgroup.remove()
        containment.close()


def test_a_run_cgroup_is_made_even_where_its_parent_went_missing(tmp_path: Path) -> None:
    # the server's own cgroup directory may have been taken for a dead server's and
    # removed (a server in another pid namespace): the first step's placement makes both
    if not _cgroup_available(tmp_path / "probe"):
        pytest.skip("this machine gives the server no cgroup v2 it can write")
    containment = Containment.choose("cgroup", tmp_path)
    assert containment.root is not None
    containment.root.rmdir()
    cgroup = containment.run_cgroup("run_parentless")
    assert cgroup is not None
    step = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        cgroup.place(step.pid)
        assert cgroup.pids() == [step.pid]
        line = Path(f"/proc/{step.pid}/cgroup").read_text()
        assert line.strip().endswith(f"/{containment.root.name}/run-run_parentless")
    finally:
        step.kill()
        step.wait(10)
        cgroup.remove()
        containment.close()
    assert not containment.root.exists()


def test_the_containment_setting_is_checked() -> None:
    assert load_settings({}).containment == "auto"
    assert load_settings({"FLWD_CONTAINMENT": "Subreaper"}).containment == "subreaper"
    with pytest.raises(SettingsError, match="containment"):
        load_settings({"FLWD_CONTAINMENT": "jail"})
