"""Domain errors. They carry fields, never HTTP machinery; each class names its problem
type (`slug`, `status`, `title`), which `flwd.api.problems` renders as RFC 9457 and
`flwd.client` maps back to the same class.

FlwdError                         internal-error 500
├── NotFound                      not-found 404
│   ├── JobNotFound               job-not-found 404
│   ├── RunNotFound               run-not-found 404
│   └── ArtifactNotFound          artifact-not-found 404
├── InvalidInput                  validation-error 400
│   ├── ArgumentsInvalid          validation-error 400 (every failing field, as JSON Pointers)
│   ├── JobNotRunnable            job-invalid 422 (the job's definition is invalid)
│   └── ResultInvalid             execution-error 500 (result does not match result_schema)
├── Conflict                      conflict 409
│   ├── RunNotCancellable         run-not-cancellable 409 (already terminal)
│   └── IdempotencyKeyReused      idempotency-conflict 409 (same key, different request)
├── QueueFull                     queue-full 429 (backpressure; carries retry_after)
├── EventsPruned                  events-pruned 410 (a resume point older than retention kept)
├── PermissionDenied              permission-denied 403
├── Unauthorized                  unauthorized 401 (no, or a refused, credential)
└── StorageError                  storage-error 503

A class that declares its own `slug` is entered in the problem table (`problem_class`),
so adding an error is adding a class; a subclass that declares no slug answers with its
parent's. `problem_fields` gives the extension members of its problem document and
`from_problem` rebuilds the error from one (what a client receives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import msgspec

#: The `type` of every problem document is this followed by the slug.
PROBLEM_BASE = "https://flowd.org/problems/"


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One failing field: `path` is a JSON Pointer (RFC 6901) into the checked document."""

    path: str
    message: str


_PROBLEM_CLASSES: dict[str, type[FlwdError]] = {}


class FlwdError(Exception):
    """Base of every error flwd raises on purpose."""

    slug: str = "internal-error"
    status: int = 500
    title: str = "Internal Server Error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "slug" in cls.__dict__:
            known = _PROBLEM_CLASSES.get(cls.slug)
            # Two classes may share a slug; a client gets the more specific one back.
            if known is None or issubclass(cls, known):
                _PROBLEM_CLASSES[cls.slug] = cls

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def problem_fields(self) -> dict[str, Any]:
        """Extension members of this error's problem document (`errors`, `retry_after`)."""
        return {}

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        """The error a problem document of this class stands for. `context` holds the ids
        the request named (`job_id`, `run_id`, `artifact_id`, `key`); subclasses whose
        constructor takes more than `detail` override this."""
        return cls(detail)

    def with_detail(self, detail: str) -> Self:
        """The same error worded as `detail` (a server's wording may know more)."""
        self.detail = detail
        self.args = (detail,)
        return self


_PROBLEM_CLASSES[FlwdError.slug] = FlwdError


def problem_classes() -> dict[str, type[FlwdError]]:
    """Every problem slug with a domain error, and the class a client raises for it."""
    return dict(_PROBLEM_CLASSES)


def problem_class(slug: str) -> type[FlwdError] | None:
    """The domain error class of a problem slug, or None for an HTTP-level problem."""
    return _PROBLEM_CLASSES.get(slug)


def field_errors(problem: Mapping[str, Any]) -> list[FieldError]:
    """The `errors` member of a problem document as `FieldError`s."""
    return [
        FieldError(path=str(e.get("path", "")), message=str(e.get("message", "")))
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]


class NotFound(FlwdError):
    slug = "not-found"
    status = 404
    title = "Not Found"


class JobNotFound(NotFound):
    slug = "job-not-found"
    title = "Job Not Found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"The job '{job_id}' does not exist")
        self.job_id = job_id

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(context.get("job_id", "?")).with_detail(detail)


class RunNotFound(NotFound):
    slug = "run-not-found"
    title = "Run Not Found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"The run '{run_id}' does not exist")
        self.run_id = run_id

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(context.get("run_id", "?")).with_detail(detail)


class ArtifactNotFound(NotFound):
    slug = "artifact-not-found"
    title = "Artifact Not Found"

    def __init__(self, artifact_id: str) -> None:
        super().__init__(f"The artifact '{artifact_id}' does not exist")
        self.artifact_id = artifact_id

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(context.get("artifact_id", "?")).with_detail(detail)


class InvalidInput(FlwdError):
    slug = "validation-error"
    status = 400
    title = "Validation Error"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)

    def problem_fields(self) -> dict[str, Any]:
        return {"errors": self.errors}

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(detail, field_errors(problem))


class ArgumentsInvalid(InvalidInput):
    """Job arguments that fail the job's schema; `errors` point into the arguments, and
    into the request body (under `/args`) in a problem document."""

    slug = "validation-error"

    def problem_fields(self) -> dict[str, Any]:
        return {
            "errors": [FieldError(path="/args" + e.path, message=e.message) for e in self.errors]
        }

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        fields = [
            FieldError(path=e.path[len("/args") :], message=e.message)
            if e.path == "/args" or e.path.startswith("/args/")
            else e
            for e in field_errors(problem)
        ]
        return cls(detail, fields)


class JobNotRunnable(InvalidInput):
    slug = "job-invalid"
    status = 422
    title = "Job Definition Invalid"

    def __init__(self, job_id: str, reasons: Sequence[str]) -> None:
        super().__init__(f"The job '{job_id}' has an invalid definition: " + "; ".join(reasons))
        self.job_id = job_id
        self.reasons = list(reasons)

    def problem_fields(self) -> dict[str, Any]:
        return {"errors": [FieldError(path="", message=r) for r in self.reasons]}

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        reasons = [e.message for e in field_errors(problem)]
        return cls(context.get("job_id", "?"), reasons).with_detail(detail)


class ResultInvalid(InvalidInput):
    slug = "execution-error"
    status = 500
    title = "Execution Error"

    def problem_fields(self) -> dict[str, Any]:
        return {}


class Conflict(FlwdError):
    slug = "conflict"
    status = 409
    title = "Conflict"


class RunNotCancellable(Conflict):
    slug = "run-not-cancellable"
    title = "Run Not Cancellable"

    def __init__(self, run_id: str, run_status: str) -> None:
        super().__init__(f"The run '{run_id}' is already {run_status} and cannot be cancelled")
        self.run_id = run_id
        self.run_status = run_status

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(context.get("run_id", "?"), "finished").with_detail(detail)


class IdempotencyKeyReused(Conflict):
    slug = "idempotency-conflict"
    title = "Idempotency Key Conflict"

    def __init__(self, key: str) -> None:
        super().__init__(f"The Idempotency-Key '{key}' was already used for a different request")
        self.key = key

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(context.get("key", "?")).with_detail(detail)


class QueueFull(FlwdError):
    slug = "queue-full"
    status = 429
    title = "Queue Full"

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"{depth} runs are already waiting; try again in {retry_after}s")
        self.depth = depth
        self.retry_after = retry_after

    def problem_fields(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        retry_after = problem.get("retry_after")
        seconds = retry_after if isinstance(retry_after, int) and retry_after > 0 else 1
        return cls(0, seconds).with_detail(detail)


class EventsPruned(FlwdError):
    """A stream asked to resume after `since`, but retention deleted events after it (up
    to `pruned_through`): resuming would silently skip them."""

    slug = "events-pruned"
    status = 410
    title = "Events Pruned"

    def __init__(self, since: int, pruned_through: int) -> None:
        super().__init__(
            f"Events after {since} up to {pruned_through} were pruned by the retention "
            f"policy; resume from {pruned_through} or later (or reconnect without "
            "Last-Event-ID) and re-read the state of runs from /api/v1/runs"
        )
        self.since = since
        self.pruned_through = pruned_through

    @classmethod
    def from_problem(
        cls, detail: str, problem: Mapping[str, Any], context: Mapping[str, str]
    ) -> Self:
        return cls(0, 0).with_detail(detail)


class PermissionDenied(FlwdError):
    slug = "permission-denied"
    status = 403
    title = "Permission Denied"


class Unauthorized(FlwdError):
    """The caller could not be identified: a credential is missing, malformed, unknown,
    expired or revoked. Raised by `actor_from_request` implementations; answered as a 401
    with `WWW-Authenticate: Bearer`."""

    slug = "unauthorized"
    status = 401
    title = "Unauthorized"


class StorageError(FlwdError):
    slug = "storage-error"
    status = 503
    title = "Storage Unavailable"
