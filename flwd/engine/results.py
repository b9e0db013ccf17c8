"""A run's results: each step's result file read, parsed and announced (masked), and the
run's result — the last step's — checked against the job's `result_schema` as the steps
wrote it, then masked: secrets never corrupt a value nor make it fail its schema.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import msgspec

from flwd.engine.active_run import ActiveRun
from flwd.engine.output import Redactor
from flwd.engine.rooms import Room, UnsafeEntry
from flwd.engine.step_process import Outcome
from flwd.events.journal import Journal
from flwd.models import Result, StepSpec
from flwd.states import FailureReason, RunStatus, StepStatus
from flwd.storage import runs as rows

#: a result file larger than this fails its step
RESULT_LIMIT = 4 * 1024 * 1024


async def collect_result(
    journal: Journal,
    active: ActiveRun,
    step: StepSpec,
    room: Room,
    results: dict[str, Any],
    outcome: Outcome,
) -> Outcome:
    """Read the step's result file, if it wrote one: kept as parsed in `results` (for the
    run's `result_schema`), announced masked in a `step.result` event. A result that cannot
    be read or parsed fails the step (the returned outcome)."""
    problem: str | None = None
    if not room.result_written(step.id):  # most steps write none: no hop to a thread
        return outcome
    try:
        raw = await asyncio.to_thread(room.read_result, step.id, RESULT_LIMIT)
        if raw is None:
            return outcome
        value = msgspec.json.decode(raw)
        # kept as parsed, for the run's result_schema; only masked copies leave
        masked = active.redactor.value(value)
    except UnsafeEntry as exc:
        problem = str(exc)
    except msgspec.DecodeError as exc:
        problem = f"result file is not valid JSON: {exc}"
    except RecursionError:
        problem = "result file is nested too deeply (arrays or objects within each other)"
    if problem is not None:
        return Outcome(
            status=StepStatus.FAILED,
            reason=FailureReason.ERROR,
            exit_code=0,
            error=active.redactor.mask_text(problem),
        )
    results[step.id] = value
    journal.post(
        "step.result",
        active.run.run_id,
        active.job.id,
        {"step_id": step.id, "value": masked},
        statements=[
            rows.update_step(active.run.run_id, step.id, result=msgspec.json.encode(masked))
        ],
        wait=False,
    )
    return outcome


def checked_result(
    active: ActiveRun, fields: dict[str, Any], results: dict[str, Any]
) -> tuple[dict[str, Any], Result]:
    """The run's result, checked against the job's `result_schema` as the steps wrote
    it, then masked: secrets never corrupt a value nor make it fail its schema."""
    job, redactor = active.job, active.redactor
    order = [step.id for step in job.steps if step.id in results]
    value = results[order[-1]]
    if fields["status"] == RunStatus.SUCCESS.value and job.result_schema:
        problems = schema_problems(job.result_schema, value, redactor)
        if problems:
            fields = {
                "status": RunStatus.FAILED.value,
                "reason": FailureReason.ERROR.value,
                "error": "result does not match result_schema: " + "; ".join(problems),
            }
    masked = {k: redactor.value(results[k]) for k in order}
    return fields, Result(value=masked[order[-1]], steps=masked)


def schema_problems(schema: dict[str, Any], value: Any, redactor: Redactor) -> list[str]:
    """What is wrong with a result, as `pointer: message`; a message that would quote a
    secret is replaced by a generic one."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(value):
        path = "/".join(str(redactor.value(p)) for p in error.absolute_path)
        message = str(error.message)
        if redactor.reveals(message):
            message = f"the value does not satisfy '{error.validator}' of the schema"
        problems.append(f"/{path}: {message}")
    return problems
