"""How a run ends: its terminal status, reason and error from its steps' outcomes, its
cancel, its timeout, or flwd itself failing (logged, with every secret masked).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from flwd.engine.active_run import ActiveRun
from flwd.engine.step_process import Outcome
from flwd.states import FailureReason, RunStatus, StepStatus, failure_reason_of

log = logging.getLogger(__name__)


#: Reasons a run ends with before all its steps did: each step not ended yet ends too.
ENDS_EVERY_STEP = frozenset({FailureReason.INTERNAL.value, FailureReason.RESOURCES_EXHAUSTED.value})

STOPPED_BY_INTERNAL = "stopped: flwd failed internally while running this run (see its error)"


def failure(active: ActiveRun, exc: BaseException, what: str) -> tuple[str, FailureReason]:
    """The error and reason of a run that flwd could not carry through: the machine out
    of descriptors, processes or memory (`resources_exhausted`, logged in one line), or
    flwd itself failing (`internal`, its traceback logged)."""
    if failure_reason_of(exc) is FailureReason.RESOURCES_EXHAUSTED:
        log.error("run %s %s: %s", active.run.run_id, what, exc)
        message = f"the server is out of file descriptors, processes or memory: {exc}"
        return active.redactor.mask_text(message), FailureReason.RESOURCES_EXHAUSTED
    return internal_error(active, exc, what), FailureReason.INTERNAL


def internal_error(active: ActiveRun, exc: BaseException, what: str) -> str:
    """Log a failure of flwd itself (its traceback with secrets masked) and return the
    run's error message, which names no secret of any length."""
    trace = "".join(traceback.format_exception(exc))
    log.error("run %s %s:\n%s", active.run.run_id, what, active.redactor.mask_text(trace))
    message = active.redactor.mask_text(f"internal error: {type(exc).__name__}: {exc}")
    if active.redactor.reveals(message):
        message = f"internal error: {type(exc).__name__} (details in the server log)"
    return message


def terminal_fields(
    active: ActiveRun,
    outcomes: dict[str, Outcome],
    error: str | None,
    error_reason: FailureReason = FailureReason.INTERNAL,
) -> dict[str, Any]:
    """The run's terminal fields (status, reason, error, exit code, signal) from what
    happened to it: flwd failing (`error`), a cancel or shutdown, its timeout, or its
    steps' outcomes (the first failed step's, `dependency_failed` when steps were skipped)."""
    if error is not None:
        return {
            "status": RunStatus.FAILED.value,
            "reason": error_reason.value,
            "error": error,
        }
    if active.cancel_requested or active.shutting_down:
        why = "cancelled" if active.cancel_requested else "cancelled: the server shut down"
        return {"status": RunStatus.CANCELLED.value, "error": why}
    if active.timed_out:
        return {
            "status": RunStatus.FAILED.value,
            "reason": FailureReason.TIMEOUT.value,
            "error": f"run timed out after {active.job.timeout:g}s",
        }
    failed = [(k, o) for k, o in outcomes.items() if o.status is StepStatus.FAILED]
    if not failed:
        return {"status": RunStatus.SUCCESS.value}
    step_id, outcome = failed[0]
    skipped = [k for k, o in outcomes.items() if o.status is StepStatus.SKIPPED]
    reason = FailureReason.DEPENDENCY_FAILED if skipped else outcome.reason
    message = f"step '{step_id}' failed: {outcome.error}"
    if skipped:
        message += "; skipped: " + ", ".join(f"'{s}'" for s in skipped)
    return {
        "status": RunStatus.FAILED.value,
        "reason": reason.value if reason else FailureReason.EXIT_CODE.value,
        "error": message,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
    }
