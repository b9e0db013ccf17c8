"""Steps as a DAG: parallel branches, `needs` ordering, failures skipping dependants, retries."""

from __future__ import annotations

from flwd.states import FailureReason, RunStatus, StepStatus
from tests.unit.engine_support import EngineWorld, events_of, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

#: Marks itself started, then waits (bounded) for the other branch's mark: it can only
#: succeed if both branches run at the same time.
RENDEZVOUS = """\
touch "$FLWD_RUN_DIR/$ME.started"
for i in $(seq 100); do
  [ -e "$FLWD_RUN_DIR/$OTHER.started" ] && { touch "$FLWD_RUN_DIR/$ME.done"; exit 0; }
  sleep 0.05
done
echo "never saw $OTHER running" >&2
exit 1
"""


async def test_independent_steps_run_in_parallel_and_needs_waits(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "diamond",
        {
            "steps": [
                {"id": "left", "run": RENDEZVOUS, "env": {"ME": "left", "OTHER": "right"}},
                {"id": "right", "run": RENDEZVOUS, "env": {"ME": "right", "OTHER": "left"}},
                {
                    "id": "join",
                    "needs": ["left", "right"],
                    "run": 'cd "$FLWD_RUN_DIR" && test -e left.done && test -e right.done',
                },
            ]
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "diamond")
        assert run.status is RunStatus.SUCCESS, run.error
        steps = {s.step_id: s for s in await service.list_steps(run.run_id)}
        assert all(s.status is StepStatus.SUCCESS for s in steps.values())
        assert steps["join"].started_at >= max(  # type: ignore[operator]
            steps["left"].finished_at,  # type: ignore[type-var]
            steps["right"].finished_at,  # type: ignore[type-var]
        )


async def test_needs_orders_a_chain(engine_world: EngineWorld) -> None:
    append = 'echo "$FLWD_STEP_ID" >> "$FLWD_RUN_DIR/order"'
    engine_world.job(
        "chain",
        {
            "steps": [
                # declared out of order on purpose: `needs` decides, not the list
                {"id": "c", "needs": "b", "run": append + '; cp "$FLWD_RUN_DIR/order" out.txt'},
                {"id": "a", "run": "sleep 0.2; " + append},
                {"id": "b", "needs": ["a"], "run": append},
            ]
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "chain")
        assert run.status is RunStatus.SUCCESS, run.error
        started = [
            e.data["step_id"]
            for e in await events_of(service, run.run_id)
            if e.type == "step.started"
        ]
        assert started == ["a", "b", "c"]


async def test_failed_step_skips_its_dependants_only(engine_world: EngineWorld) -> None:
    engine_world.job(
        "broken-branch",
        {
            "steps": [
                {"id": "fetch", "run": "echo fetching; exit 4"},
                {"id": "parse", "needs": "fetch", "run": "echo parse"},
                {"id": "report", "needs": "parse", "run": "echo report"},
                {"id": "other", "run": "sleep 0.3; echo other"},
            ]
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "broken-branch")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.DEPENDENCY_FAILED
        assert run.exit_code == 4
        assert "'fetch'" in (run.error or "") and "'parse'" in (run.error or "")
        steps = {s.step_id: s for s in await service.list_steps(run.run_id)}
        assert steps["fetch"].status is StepStatus.FAILED
        assert steps["fetch"].reason is FailureReason.EXIT_CODE
        for skipped in ("parse", "report"):
            assert steps[skipped].status is StepStatus.SKIPPED
            assert steps[skipped].reason is FailureReason.DEPENDENCY_FAILED
            assert steps[skipped].started_at is None
        # the independent branch was not stopped by the failure
        assert steps["other"].status is StepStatus.SUCCESS
        messages = [x.message for x in await service.read_logs(run.run_id)]
        assert "other" in messages and "parse" not in messages and "report" not in messages


async def test_failed_last_step_is_reason_exit_code(engine_world: EngineWorld) -> None:
    engine_world.job(
        "last-fails",
        {"steps": [{"id": "a", "run": "true"}, {"id": "b", "needs": "a", "run": "exit 2"}]},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "last-fails")
        assert run.status is RunStatus.FAILED
        assert run.reason is FailureReason.EXIT_CODE and run.exit_code == 2


FLAKY = """\
n=$(cat "$FLWD_RUN_DIR/count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$FLWD_RUN_DIR/count"
echo "attempt $FLWD_ATTEMPT"
[ "$n" -ge "$FAILURES" ]
"""


async def test_a_step_retries_until_it_succeeds(engine_world: EngineWorld) -> None:
    engine_world.job(
        "flaky",
        {
            "steps": [
                {"id": "main", "run": FLAKY, "retries": 2, "env": {"FAILURES": "1"}},
                {"id": "after", "needs": "main", "run": 'cat "$FLWD_RUN_DIR/count"'},
            ]
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "flaky")
        assert run.status is RunStatus.SUCCESS, run.error
        steps = {s.step_id: s for s in await service.list_steps(run.run_id)}
        assert steps["main"].status is StepStatus.SUCCESS and steps["main"].attempt == 1
        finished = [
            (e.data["attempt"], e.data["status"], e.data.get("retrying", False))
            for e in await events_of(service, run.run_id)
            if e.type == "step.finished" and e.data["step_id"] == "main"
        ]
        assert finished == [(0, "failed", True), (1, "success", False)]
        messages = [x.message for x in await service.read_logs(run.run_id)]
        assert messages == ["attempt 0", "attempt 1", "2"]


async def test_retries_run_out(engine_world: EngineWorld) -> None:
    engine_world.job(
        "hopeless",
        {"steps": [{"id": "main", "run": FLAKY, "retries": 2, "env": {"FAILURES": "99"}}]},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "hopeless")
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.EXIT_CODE
        (step,) = await service.list_steps(run.run_id)
        assert step.attempt == 2 and step.status is StepStatus.FAILED
        messages = [x.message for x in await service.read_logs(run.run_id)]
        assert messages == ["attempt 0", "attempt 1", "attempt 2"]
