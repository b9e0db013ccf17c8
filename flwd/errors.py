"""Domain errors. They carry fields, never HTTP; `flwd.api.problems` maps them to RFC 9457.

FlwdError
├── NotFound
│   ├── JobNotFound
│   ├── RunNotFound
│   └── ArtifactNotFound
├── InvalidInput
│   ├── ArgumentsInvalid          (every failing field, as JSON Pointers)
│   ├── JobNotRunnable            (the job's definition is invalid)
│   └── ResultInvalid             (result does not match result_schema)
├── Conflict
│   ├── RunNotCancellable         (already terminal)
│   └── IdempotencyKeyReused      (same key, different request)
├── QueueFull                     (backpressure; carries retry_after)
├── EventsPruned                  (a resume point older than what retention kept)
├── PermissionDenied
└── StorageError
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One failing field: `path` is a JSON Pointer (RFC 6901) into the checked document."""

    path: str
    message: str


class FlwdError(Exception):
    """Base of every error flwd raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(FlwdError):
    pass


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"The job '{job_id}' does not exist")
        self.job_id = job_id


class RunNotFound(NotFound):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"The run '{run_id}' does not exist")
        self.run_id = run_id


class ArtifactNotFound(NotFound):
    def __init__(self, artifact_id: str) -> None:
        super().__init__(f"The artifact '{artifact_id}' does not exist")
        self.artifact_id = artifact_id


class InvalidInput(FlwdError):
    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)


class ArgumentsInvalid(InvalidInput):
    pass


class JobNotRunnable(InvalidInput):
    def __init__(self, job_id: str, reasons: Sequence[str]) -> None:
        super().__init__(f"The job '{job_id}' has an invalid definition: " + "; ".join(reasons))
        self.job_id = job_id
        self.reasons = list(reasons)


class ResultInvalid(InvalidInput):
    pass


class Conflict(FlwdError):
    pass


class RunNotCancellable(Conflict):
    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"The run '{run_id}' is already {status} and cannot be cancelled")
        self.run_id = run_id
        self.status = status


class IdempotencyKeyReused(Conflict):
    def __init__(self, key: str) -> None:
        super().__init__(f"The Idempotency-Key '{key}' was already used for a different request")
        self.key = key


class QueueFull(FlwdError):
    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"{depth} runs are already waiting; try again in {retry_after}s")
        self.depth = depth
        self.retry_after = retry_after


class EventsPruned(FlwdError):
    """A stream asked to resume after `since`, but retention deleted events after it (up
    to `pruned_through`): resuming would silently skip them."""

    def __init__(self, since: int, pruned_through: int) -> None:
        super().__init__(
            f"Events after {since} up to {pruned_through} were pruned by the retention "
            f"policy; resume from {pruned_through} or later (or reconnect without "
            "Last-Event-ID) and re-read the state of runs from /api/v1/runs"
        )
        self.since = since
        self.pruned_through = pruned_through


class PermissionDenied(FlwdError):
    pass


class StorageError(FlwdError):
    pass
