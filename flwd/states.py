"""Run and step statuses, the sets that classify them, and the allowed transitions.

Transitions are enforced here and nowhere else: a terminal status never changes.
"""

from __future__ import annotations

import errno
from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class FailureReason(StrEnum):
    """Why a run or step ended in `failed` (or why a step was `skipped`)."""

    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    DEPENDENCY_FAILED = "dependency_failed"
    LOST = "lost"
    ERROR = "error"
    #: flwd itself failed (a bug, a storage failure): the run and its unfinished steps end
    INTERNAL = "internal"
    RESOURCES_EXHAUSTED = "resources_exhausted"
    #: a step went past a limit its profile set (memory, CPU time ...): `error` names it
    RESOURCE_LIMIT = "resource_limit"


#: What the OS says when a process or the system is out of descriptors, processes or
#: memory: a condition of the machine, reported as `resources_exhausted`, not a bug.
_EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def failure_reason_of(exc: BaseException) -> FailureReason:
    """`resources_exhausted` for an OSError saying the machine ran out, else `error`."""
    if isinstance(exc, OSError) and exc.errno in _EXHAUSTED_ERRNOS:
        return FailureReason.RESOURCES_EXHAUSTED
    return FailureReason.ERROR


ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
TERMINAL_RUN = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_STEP = frozenset(
    {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED}
)

_RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: TERMINAL_RUN,
    RunStatus.SUCCESS: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def can_transition(current: RunStatus, new: RunStatus) -> bool:
    """True when a run in `current` may move to `new` (terminal states are sticky)."""
    return new in _RUN_TRANSITIONS[current]
