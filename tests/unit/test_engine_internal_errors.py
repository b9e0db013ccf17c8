"""Masking never corrupts a result, and no step is ever left running: a failure of flwd
itself ends every step and the run with reason `internal`, with their events; start-up
ends the steps a previous life left unended in an ended run."""

from __future__ import annotations

import sqlite3

import pytest

from flwd.engine.recovery import REPAIRED_MESSAGE
from flwd.engine.rooms import Room
from flwd.states import TERMINAL_STEP, FailureReason, RunStatus, StepStatus
from tests.unit.engine_support import EngineWorld, events_of, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

SECRET = "Zq-internal-7731"
SECRET_ARGS = {
    "type": "object",
    "properties": {"password": {"type": ["string", "integer"], "format": "secret"}},
}


async def test_a_secret_equal_to_a_result_number_masks_it_without_breaking_the_result(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "counts",
        {
            "args": SECRET_ARGS,
            "result_schema": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
            },
            "command": """printf '{"n": 12345, "m": 123456, "ok": true}' > "$FLWD_RESULT_FILE\"""",
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "counts", {"password": "12345"})
        # checked against result_schema as written, then masked
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.result is not None
        assert run.result.value == {"n": "***", "m": 123456, "ok": True}
        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.SUCCESS
        output = [e for e in await events_of(service, run.run_id) if e.type == "step.result"]
        assert [e.data["value"] for e in output] == [{"n": "***", "m": 123456, "ok": True}]


def _broken_read_result(room: Room, step_id: str, limit: int) -> bytes | None:
    """A bug deep in reading a step's result, with the secret in its message."""
    raise RuntimeError(f"disk said no while reading {step_id} with {SECRET}")


async def test_a_failure_inside_flwd_ends_every_step_and_the_run_as_internal(
    engine_world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's result cannot be read because of a bug (a deep helper made to raise, with
    the secret in its message) while a parallel step runs and a third waits for it."""
    engine_world.job(
        "dag",
        {
            "args": SECRET_ARGS,
            "steps": [
                {"id": "quick", "run": 'echo "{}" > "$FLWD_RESULT_FILE"'},
                {"id": "slow", "run": "sleep 30"},
                {"id": "after", "run": "echo never", "needs": "slow"},
            ],
        },
    )

    monkeypatch.setattr(Room, "read_result", _broken_read_result)
    async with engine_world.open() as service:
        run = await run_job(service, "dag", {"password": SECRET})
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.INTERNAL
        assert run.error is not None and "internal error: RuntimeError" in run.error
        assert SECRET not in run.error
        steps = {s.step_id: s for s in await service.list_steps(run.run_id)}
        assert all(s.status in TERMINAL_STEP for s in steps.values())
        assert {s.step_id: (s.status, s.reason) for s in steps.values()} == {
            "quick": (StepStatus.FAILED, FailureReason.INTERNAL),
            "slow": (StepStatus.FAILED, FailureReason.INTERNAL),
            "after": (StepStatus.FAILED, FailureReason.INTERNAL),
        }
        events = await events_of(service, run.run_id)
        finished = [e.data for e in events if e.type == "step.finished"]
        assert sorted(d["step_id"] for d in finished) == ["after", "quick", "slow"]
        assert all(d["reason"] == "internal" for d in finished)
        (end,) = [e.data for e in events if e.type == "run.finished"]
        assert end["reason"] == "internal" and SECRET not in str(events)


async def test_a_failure_inside_flwd_ends_a_one_step_run_as_internal(
    engine_world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bug in a job of one step (awaited without a task of its own)."""
    engine_world.job("single", {"args": SECRET_ARGS, "command": 'echo "{}" > "$FLWD_RESULT_FILE"'})

    monkeypatch.setattr(Room, "read_result", _broken_read_result)
    async with engine_world.open() as service:
        run = await run_job(service, "single", {"password": SECRET})
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.INTERNAL
        assert run.error is not None and "internal error: RuntimeError" in run.error
        (step,) = await service.list_steps(run.run_id)
        assert (step.status, step.reason) == (StepStatus.FAILED, FailureReason.INTERNAL)
        events = await events_of(service, run.run_id)
        (finished,) = [e.data for e in events if e.type == "step.finished"]
        assert finished["reason"] == "internal"
        assert events[-1].type == "run.finished" and SECRET not in str(events)


async def test_a_failure_while_finishing_the_run_still_ends_it(
    engine_world: EngineWorld,
) -> None:
    """A result_schema whose `$ref` leads nowhere: checking the result raises."""
    engine_world.job(
        "unresolvable",
        {
            "args": SECRET_ARGS,
            "result_schema": {"$ref": "#/$defs/missing"},
            "command": 'echo \'{"n": 1}\' > "$FLWD_RESULT_FILE"',
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "unresolvable", {"password": SECRET})
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.INTERNAL
        assert run.error is not None and run.error.startswith("internal error")
        (step,) = await service.list_steps(run.run_id)
        assert step.status in TERMINAL_STEP
        types = [e.type for e in await events_of(service, run.run_id)]
        assert types.count("step.finished") == 1 and types[-1] == "run.finished"


async def test_start_up_ends_the_steps_left_unended_in_an_ended_run(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "pair",
        {"steps": [{"id": "one", "run": "true"}, {"id": "two", "run": "true", "needs": "one"}]},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "pair")
    assert run.status is RunStatus.SUCCESS
    # what a failure while finishing left behind before this was fixed
    with sqlite3.connect(engine_world.data_dir / "flwd.db") as conn:
        conn.execute(
            "UPDATE runs SET status = 'failed', reason = 'error' WHERE run_id = ?", (run.run_id,)
        )
        conn.execute(
            "UPDATE steps SET status = 'running' WHERE run_id = ? AND step_id = 'one'",
            (run.run_id,),
        )
        conn.execute(
            "UPDATE steps SET status = 'pending' WHERE run_id = ? AND step_id = 'two'",
            (run.run_id,),
        )
    for _ in range(2):  # repaired once, and a second start finds nothing to do
        async with engine_world.open() as service:
            steps = await service.list_steps(run.run_id)
            assert [(s.status, s.reason, s.error) for s in steps] == [
                (StepStatus.FAILED, FailureReason.INTERNAL, REPAIRED_MESSAGE)
            ] * 2
            events = await events_of(service, run.run_id)
            repaired = [e.data for e in events if e.data.get("error") == REPAIRED_MESSAGE]
            assert sorted(d["step_id"] for d in repaired) == ["one", "two"]
            assert (await service.get_run(run.run_id)).status is RunStatus.FAILED


async def test_a_result_nested_too_deeply_fails_its_step_not_flwd(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "deep",
        {
            "args": SECRET_ARGS,
            "command": 'python3 -c "import os; '
            "open(os.environ['FLWD_RESULT_FILE'], 'w').write('[' * 5000 + ']' * 5000)\"",
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "deep", {"password": SECRET})
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.ERROR
        assert "nested too deeply" in (run.error or "")
        (step,) = await service.list_steps(run.run_id)
        assert step.status is StepStatus.FAILED and step.reason is FailureReason.ERROR
