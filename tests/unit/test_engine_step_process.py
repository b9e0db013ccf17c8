"""A step's process: own session and process group per step, per-run working directory, a clean
environment with flwd's variables, arguments that never pass through a shell, live output,
no lingering children and no zombies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flwd.states import RunStatus
from tests.unit.engine_support import (
    PROC,
    EngineWorld,
    alive,
    finish,
    process_state,
    read_pids,
    run_job,
    run_processes,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]

PROBE = """\
import json, os
info = {
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "sid": os.getsid(0),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
}
with open(os.environ["FLWD_RESULT_FILE"], "w") as out:
    json.dump(info, out)
"""


async def test_each_step_leads_its_own_session_and_group(engine_world: EngineWorld) -> None:
    engine_world.job(
        "probe",
        {
            "steps": [
                {"id": "py", "script": "probe.py"},
                # the same from a shell, the way an operator would check it
                {"id": "sh", "run": 'echo "$$ $(ps -o pgid= -p $$) $(ps -o sid= -p $$)"'},
            ]
        },
        {"probe.py": PROBE},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "probe")
        assert run.status is RunStatus.SUCCESS, run.error
        info = run.result.steps["py"]  # type: ignore[union-attr]
        assert info["pid"] == info["pgid"] == info["sid"]
        assert info["pgid"] not in (os.getpgid(0), os.getpid())
        assert info["sid"] != os.getsid(0)

        (line,) = [x.message for x in await service.read_logs(run.run_id) if x.step_id == "sh"]
        pid, pgid, sid = (int(x) for x in line.split())
        assert pid == pgid == sid and pgid != info["pgid"]


async def test_per_run_working_directory(engine_world: EngineWorld) -> None:
    engine_world.job("probe", {"steps": [{"id": "py", "script": "probe.py"}]}, {"probe.py": PROBE})
    async with engine_world.open() as service:
        first = await run_job(service, "probe")
        second = await run_job(service, "probe")
        dirs = []
        for run in (first, second):
            info = run.result.value  # type: ignore[union-attr]
            cwd = Path(info["cwd"])
            assert cwd == Path(info["env"]["FLWD_RUN_DIR"])
            assert cwd == engine_world.data_dir / "work" / run.run_id / "run"
            # gone after the run: it held the arguments file, secrets included
            assert not cwd.exists()
            dirs.append(cwd)
        assert dirs[0] != dirs[1]


async def test_clean_environment_and_flwd_variables(
    engine_world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWD_TEST_SERVER_SECRET", "server-only-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-server-key")
    monkeypatch.setenv("FLWD_DATA_DIR", "/somewhere/else")
    engine_world.job(
        "probe",
        {
            "args": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "count": {"type": "integer"},
                    "flag": {"type": "boolean"},
                    "my-arg": {"type": "string"},
                    "obj": {"type": "object"},
                },
            },
            "env": {"JOB_LEVEL": "job"},
            "steps": [{"id": "py", "script": "probe.py", "env": {"STEP_LEVEL": "step"}}],
        },
        {"probe.py": PROBE},
    )
    args = {"name": "Ada", "count": 3, "flag": True, "my-arg": "dash", "obj": {"a": [1, 2]}}
    async with engine_world.open() as service:
        run = await run_job(service, "probe", args)
        assert run.status is RunStatus.SUCCESS, run.error
        env = run.result.value["env"]  # type: ignore[union-attr]

    for leaked in ("FLWD_TEST_SERVER_SECRET", "AWS_SECRET_ACCESS_KEY", "FLWD_DATA_DIR"):
        assert leaked not in env
    assert "server-only-value" not in json.dumps(env)
    assert env["PATH"]
    assert env["JOB_LEVEL"] == "job" and env["STEP_LEVEL"] == "step"
    assert env["FLWD_ARG_NAME"] == "Ada"
    assert env["FLWD_ARG_COUNT"] == "3"
    assert env["FLWD_ARG_FLAG"] == "true"
    assert env["FLWD_ARG_MY_ARG"] == "dash"
    assert json.loads(env["FLWD_ARG_OBJ"]) == {"a": [1, 2]}
    assert env["FLWD_RUN_ID"] == run.run_id
    assert env["FLWD_JOB_ID"] == "probe" and env["FLWD_STEP_ID"] == "py"
    assert env["PYTHONUNBUFFERED"] == "1"
    # in the run's room, beside its working directory (docs/storage.md)
    room = Path(env["FLWD_RUN_DIR"]).parent
    assert room == engine_world.data_dir / "work" / run.run_id
    assert env["FLWD_ARGS_FILE"] == str(room / "args.json")
    assert env["FLWD_RESULT_FILE"] == str(room / "results" / "py.json")
    assert env["FLWD_ARTIFACTS_DIR"] == str(room / "artifacts")


async def test_args_file_holds_the_arguments_as_json(engine_world: EngineWorld) -> None:
    engine_world.job(
        "args-file",
        {
            "args": {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "tags": {"type": "array"}},
            },
            "command": 'cp "$FLWD_ARGS_FILE" "$FLWD_RESULT_FILE"',
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "args-file", {"n": 7, "tags": ["x", "y"]})
        assert run.result is not None and run.result.value == {"n": 7, "tags": ["x", "y"]}


async def test_shell_metacharacters_in_arguments_arrive_verbatim(
    engine_world: EngineWorld,
) -> None:
    marker = engine_world.root / "pwned"
    victim = engine_world.root / "victim"
    victim.mkdir()
    hostile = (
        f"$(touch {marker}) `touch {marker}` ; rm -rf {victim} && echo \"dq\" 'sq' "
        "| cat > /dev/null & $HOME ${PATH} \\ * ?"
    )
    engine_world.job(
        "echo-arg",
        {
            "args": {"type": "object", "properties": {"text": {"type": "string"}}},
            "steps": [
                {"id": "sh", "run": 'printf "%s\\n" "$FLWD_ARG_TEXT"'},
                {
                    "id": "py",
                    "script": "echo.py",
                },
            ],
        },
        {
            "echo.py": (
                "import json, os\n"
                "args = json.load(open(os.environ['FLWD_ARGS_FILE']))\n"
                "json.dump({'env': os.environ['FLWD_ARG_TEXT'], 'file': args['text']},\n"
                "          open(os.environ['FLWD_RESULT_FILE'], 'w'))\n"
            )
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "echo-arg", {"text": hostile})
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.result is not None
        assert run.result.value == {"env": hostile, "file": hostile}
        assert [x.message for x in await service.read_logs(run.run_id)] == [hostile]
    assert not marker.exists()
    assert victim.is_dir()


async def test_python_output_is_live_not_buffered(engine_world: EngineWorld) -> None:
    gate = engine_world.root / "gate"
    engine_world.job(
        "chatty-py",
        {"steps": [{"id": "py", "script": "live.py"}]},
        {
            "live.py": (
                "import os, time\n"
                "print('first line')\n"  # no flush: PYTHONUNBUFFERED must do it
                f"while not os.path.exists({str(gate)!r}):\n"
                "    time.sleep(0.02)\n"
                "print('after gate')\n"
            )
        },
    )
    async with engine_world.open() as service:
        created = await service.create_run("chatty-py", {})

        async def first_line_seen() -> bool:
            logs = await service.read_logs(created.run_id)
            return any(line.message == "first line" for line in logs)

        await wait_for(first_line_seen, what="the first line while the step still runs")
        assert (await service.get_run(created.run_id)).status is RunStatus.RUNNING
        gate.touch()
        run = await finish(service, created)
        messages = [x.message for x in await service.read_logs(run.run_id)]
        assert messages == ["first line", "after gate"]


async def test_background_children_do_not_outlive_their_step(engine_world: EngineWorld) -> None:
    pids = engine_world.root / "bg.pid"
    engine_world.job(
        "leaves-child",
        {"command": f"sleep 300 & echo $! > {pids}; echo main done"},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "leaves-child", timeout=8)
        # the main process exited 0: the run succeeds, and does not wait 300 s for its child
        assert run.status is RunStatus.SUCCESS
        elapsed = (run.finished_at - run.started_at).total_seconds()  # type: ignore[operator]
        assert elapsed < 5
        (child,) = await read_pids(pids)
        assert not alive(child)


async def test_processes_that_escaped_a_finished_step_are_stopped_and_reaped(
    engine_world: EngineWorld,
) -> None:
    # A step that exits 0 after starting a daemon in a session of its own (setsid) and a
    # double-forked one: once its group is empty, the engine finds them among its own
    # (adopted) children, stops them before the run is reported over, and reaps them.
    pids = engine_world.root / "escaped.pid"
    engine_world.job(
        "daemonizes",
        {
            "command": (
                f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300' > /dev/null 2>&1 & "
                f"(sh -c 'echo $$ >> {pids}; exec sleep 300' > /dev/null 2>&1 &) ; "
                f'while [ "$(cat {pids} 2>/dev/null | wc -l)" -lt 2 ]; do sleep 0.01; done'
            )
        },
    )
    async with engine_world.open(kill_grace=1) as service:
        run = await run_job(service, "daemonizes")
        assert run.status is RunStatus.SUCCESS
        escaped = await read_pids(pids, 2)
        assert [pid for pid in escaped if process_state(pid) is not None] == []
        assert run_processes(run.run_id) == []


async def test_no_zombie_children_remain(engine_world: EngineWorld) -> None:
    engine_world.job("quick", {"command": "true & true & exit 0"})
    async with engine_world.open() as service:
        for _ in range(5):
            await run_job(service, "quick")

    def zombies_of_mine() -> list[int]:
        found = []
        for entry in os.listdir(PROC):
            if not entry.isdigit():
                continue
            try:
                raw = (PROC / entry / "stat").read_bytes()
            except OSError:
                continue
            state, ppid = raw[raw.rfind(b")") + 2 :].split()[:2]
            if state == b"Z" and int(ppid) == os.getpid():
                found.append(int(entry))
        return found

    assert zombies_of_mine() == []


async def test_a_step_reading_stdin_gets_end_of_file(engine_world: EngineWorld) -> None:
    engine_world.job("reads-stdin", {"command": "cat; echo stdin closed"})
    async with engine_world.open() as service:
        run = await run_job(service, "reads-stdin", timeout=5)
        assert run.status is RunStatus.SUCCESS
        assert [x.message for x in await service.read_logs(run.run_id)] == ["stdin closed"]


async def test_output_faster_than_the_store_pauses_the_pipes_and_loses_nothing(
    engine_world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a tiny queue bound: the step's pipes are paused (the step blocks on its writes)
    # again and again while the store catches up, and every line still arrives, in order
    from flwd.engine import step_process
    from flwd.storage import store

    monkeypatch.setattr(store, "_QUEUE_BYTES", 32 * 1024)
    pauses = []
    pause = step_process._StepProcess._pause

    def counting_pause(self: step_process._StepProcess) -> None:
        pauses.append(1)
        pause(self)

    monkeypatch.setattr(step_process._StepProcess, "_pause", counting_pause)
    engine_world.job("flood", {"steps": [{"id": "s", "run": "seq 1 100000; seq 1 100000 >&2"}]})
    async with engine_world.open() as service:
        run = await run_job(service, "flood")
        assert run.status is RunStatus.SUCCESS, run.error
        logs = await service.read_logs(run.run_id)
        expected = [str(n) for n in range(1, 100001)]
        assert [x.message for x in logs if x.level == "info"] == expected
        assert [x.message for x in logs if x.level == "error"] == expected
    assert pauses
