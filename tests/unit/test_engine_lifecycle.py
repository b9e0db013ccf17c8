"""Run lifecycle: ids, statuses, failure reasons, exit codes, signals, timestamps, sticky
terminal states, idempotency keys, restart, and the data dir lock."""

from __future__ import annotations

import re
import signal

import pytest

from flwd.engine.datadir_lock import DataDirBusy
from flwd.errors import IdempotencyKeyReused, RunNotCancellable
from flwd.states import FailureReason, RunStatus, StepStatus
from tests.unit.engine_support import (
    EngineWorld,
    events_of,
    finish,
    run_job,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]

RUN_ID = re.compile(r"^run_[0-9A-HJKMNP-TV-Z]{26}$")


async def test_successful_run_moves_pending_running_success(engine_world: EngineWorld) -> None:
    gate = engine_world.root / "gate"
    engine_world.job(
        "wait-gate",
        {"command": f"while [ ! -e '{gate}' ]; do sleep 0.02; done; echo done"},
    )
    async with engine_world.open() as service:
        created = await service.create_run("wait-gate", {})
        assert RUN_ID.match(created.run_id)
        assert created.status is RunStatus.PENDING

        async def is_running() -> bool:
            return (await service.get_run(created.run_id)).status is RunStatus.RUNNING

        await wait_for(is_running, what="the run to be running")
        steps = await service.list_steps(created.run_id)
        assert [s.status for s in steps] == [StepStatus.RUNNING]
        gate.touch()
        run = await finish(service, created)

        assert run.status is RunStatus.SUCCESS
        assert run.reason is None and run.error is None
        assert run.created_at <= run.started_at <= run.finished_at  # type: ignore[operator]
        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.SUCCESS and step.exit_code == 0
        assert run.started_at <= step.started_at <= step.finished_at <= run.finished_at  # type: ignore[operator]
        statuses = [
            e.data.get("status")
            for e in await events_of(service, run.run_id)
            if e.type.startswith("run.") and e.type != "run.output"
        ]
        assert statuses == ["pending", "running", "success"]


async def test_two_runs_get_distinct_ids(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "true"})
    async with engine_world.open() as service:
        a = await service.create_run("ok", {})
        b = await service.create_run("ok", {})
        assert a.run_id != b.run_id and a.run_id < b.run_id  # ULIDs sort by creation
        await finish(service, a)
        await finish(service, b)


async def test_nonzero_exit_is_failed_exit_code(engine_world: EngineWorld) -> None:
    engine_world.job("fail", {"command": "echo about to fail; exit 3"})
    async with engine_world.open() as service:
        run = await run_job(service, "fail")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.EXIT_CODE
        assert run.exit_code == 3 and run.signal is None
        assert "exited with code 3" in (run.error or "")
        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.FAILED and step.exit_code == 3


async def test_killed_by_signal_records_the_signal(engine_world: EngineWorld) -> None:
    engine_world.job("suicide", {"command": "kill -KILL $$"})
    async with engine_world.open() as service:
        run = await run_job(service, "suicide")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.EXIT_CODE
        assert run.signal == signal.SIGKILL and run.exit_code is None
        assert "SIGKILL" in (run.error or "")
        (step,) = await service.list_steps(run.run_id)
        assert step.signal == signal.SIGKILL


async def test_run_timeout_fails_with_reason_timeout(engine_world: EngineWorld) -> None:
    engine_world.job("too-slow", {"timeout": "700ms", "command": "sleep 30"})
    async with engine_world.open() as service:
        run = await run_job(service, "too-slow")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.TIMEOUT
        assert "timed out" in (run.error or "")
        elapsed = (run.finished_at - run.started_at).total_seconds()  # type: ignore[operator]
        assert 0.6 < elapsed < 5


async def test_step_timeout_fails_with_reason_timeout(engine_world: EngineWorld) -> None:
    engine_world.job(
        "slow-step",
        {"steps": [{"id": "main", "run": "sleep 30", "timeout": "500ms"}]},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "slow-step")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.TIMEOUT
        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.FAILED and step.reason is FailureReason.TIMEOUT
        assert step.signal == signal.SIGTERM


async def test_invalid_result_json_is_failed_error(engine_world: EngineWorld) -> None:
    engine_world.job("bad-result", {"command": "printf '{not json' > \"$FLWD_RESULT_FILE\""})
    async with engine_world.open() as service:
        run = await run_job(service, "bad-result")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.ERROR
        assert "not valid JSON" in (run.error or "")
        assert run.result is None


async def test_unstartable_program_is_failed_error(engine_world: EngineWorld) -> None:
    missing = engine_world.root / "no-such-interpreter"
    engine_world.job(
        "unstartable",
        {"steps": [{"id": "main", "script": "main.sh"}]},
        {"main.sh": f"#!{missing}\necho never\n"},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "unstartable")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.ERROR
        assert "cannot start" in (run.error or "")
        logs = await service.read_logs(run.run_id)
        assert any("cannot start" in line.message for line in logs)


async def test_terminal_states_are_sticky(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "true"})
    engine_world.job("fail", {"command": "exit 1"})
    async with engine_world.open() as service:
        for job_id, status in (("ok", RunStatus.SUCCESS), ("fail", RunStatus.FAILED)):
            run = await run_job(service, job_id)
            assert run.status is status
            with pytest.raises(RunNotCancellable) as caught:
                await service.cancel_run(run.run_id)
            assert caught.value.run_status == status.value
            after = await service.get_run(run.run_id)
            assert after.status is status and after.finished_at == run.finished_at
            types = [e.type for e in await events_of(service, run.run_id)]
            assert "run.cancelled" not in types
            assert types.count("run.finished") == 1


async def test_idempotency_key_returns_the_same_run(engine_world: EngineWorld) -> None:
    engine_world.job(
        "greet",
        {
            "args": {"type": "object", "properties": {"name": {"type": "string"}}},
            "command": 'echo "hi $FLWD_ARG_NAME"',
        },
    )
    async with engine_world.open() as service:
        first = await service.create_run("greet", {"name": "a"}, idempotency_key="k1")
        again = await service.create_run("greet", {"name": "a"}, idempotency_key="k1")
        assert again.run_id == first.run_id
        with pytest.raises(IdempotencyKeyReused):
            await service.create_run("greet", {"name": "b"}, idempotency_key="k1")
        other_tenant = await service.create_run(
            "greet", {"name": "a"}, idempotency_key="k1", tenant="t2"
        )
        assert other_tenant.run_id != first.run_id
        await finish(service, first)
        await finish(service, other_tenant)
        _, total = await service.list_runs(job_id="greet")
        assert total == 2
        # still the same run once it has finished
        later = await service.create_run("greet", {"name": "a"}, idempotency_key="k1")
        assert later.run_id == first.run_id and later.status is RunStatus.SUCCESS


async def test_restart_creates_a_new_run_with_the_same_args(engine_world: EngineWorld) -> None:
    engine_world.job(
        "greet",
        {
            "args": {"type": "object", "properties": {"name": {"type": "string"}}},
            "command": 'echo "hi $FLWD_ARG_NAME"',
        },
    )
    async with engine_world.open() as service:
        first = await run_job(service, "greet", {"name": "Ada"})
        second = await finish(service, await service.restart_run(first.run_id))
        assert second.run_id != first.run_id
        assert second.job_id == first.job_id and second.args == {"name": "Ada"}
        logs = await service.read_logs(second.run_id)
        assert [line.message for line in logs] == ["hi Ada"]


async def test_a_second_engine_on_the_same_data_dir_is_refused(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "true"})
    async with engine_world.open() as service:
        with pytest.raises(DataDirBusy):
            async with engine_world.open():
                pass
        # the refused engine touched nothing: the first still works
        assert (await run_job(service, "ok")).status is RunStatus.SUCCESS
    async with engine_world.open() as again:  # released on exit
        assert (await run_job(again, "ok")).status is RunStatus.SUCCESS


async def test_runs_are_listed_newest_first_with_filters(engine_world: EngineWorld) -> None:
    engine_world.job("ok", {"command": "true"})
    engine_world.job("fail", {"command": "exit 1"})
    async with engine_world.open() as service:
        made = [await run_job(service, job) for job in ("ok", "fail", "ok", "ok")]
        runs, total = await service.list_runs()
        assert total == 4 and [r.run_id for r in runs] == [r.run_id for r in reversed(made)]
        oks, total = await service.list_runs(job_id="ok", limit=2)
        assert total == 3 and [r.run_id for r in oks] == [made[3].run_id, made[2].run_id]
        rest, _ = await service.list_runs(job_id="ok", limit=2, offset=2)
        assert [r.run_id for r in rest] == [made[0].run_id]
        failed, total = await service.list_runs(status=RunStatus.FAILED)
        assert total == 1 and failed[0].run_id == made[1].run_id
        assert (await service.list_runs(tenant="nobody"))[1] == 0


async def test_wait_and_cancel_answer_exactly_what_is_stored(engine_world: EngineWorld) -> None:
    # wait_run and cancel_run answer from memory once run.finished has committed; that
    # answer must be the stored row, field for field, whatever way the run ended
    engine_world.job("ok", {"command": 'echo \'{"n": 1.5, "s": ["x"]}\' > "$FLWD_RESULT_FILE"'})
    engine_world.job("exits", {"command": "exit 3"})
    engine_world.job("killed", {"command": "kill -KILL $$"})
    engine_world.job(
        "bad-result",
        {"command": 'echo 7 > "$FLWD_RESULT_FILE"', "result_schema": {"type": "string"}},
    )
    engine_world.job("slow", {"command": "sleep 30", "timeout": "300ms"})
    engine_world.job("long", {"command": "echo ready; sleep 30"})
    async with engine_world.open(kill_grace=0.5) as service:
        answers = [
            await run_job(service, job_id, {})
            for job_id in ("ok", "exits", "killed", "bad-result", "slow")
        ]
        created = await service.create_run("long", {})

        async def ready() -> bool:
            return any(x.message == "ready" for x in await service.read_logs(created.run_id))

        await wait_for(ready, what="the long run to print")
        answers.append(await service.cancel_run(created.run_id))
        statuses = [a.status for a in answers]
        assert statuses == [
            RunStatus.SUCCESS,
            RunStatus.FAILED,
            RunStatus.FAILED,
            RunStatus.FAILED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        ]
        assert answers[0].result is not None and answers[0].result.value == {"n": 1.5, "s": ["x"]}
        for answer in answers:
            assert answer == await service.get_run(answer.run_id)
            assert answer.started_at is not None and answer.finished_at is not None
