"""The one place where errors become HTTP: RFC 9457 problem details for every failure.

Domain errors (`flwd.errors`) know nothing of HTTP; Litestar's own exceptions (unknown
route, wrong method, oversized or malformed body, parameter validation) and unexpected
exceptions are all answered here, as `application/problem+json` with `type`, `title`,
`status`, `detail` and `instance`. `PROBLEM_TYPES` is the complete list of slugs; a test
checks that `docs/problems.md` documents each of them.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec

from flwd import errors
from flwd.api.request_id import request_id
from flwd.errors import PROBLEM_BASE

log = logging.getLogger("flwd.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemType(NamedTuple):
    status: int
    title: str


#: Problems answered for HTTP-level refusals that have no domain error (routing, parsing,
#: limits, readiness). Domain errors name their own problem type on their class.
HTTP_PROBLEMS: dict[str, ProblemType] = {
    "too-many-requests": ProblemType(429, "Too Many Requests"),
    "method-not-allowed": ProblemType(405, "Method Not Allowed"),
    "not-acceptable": ProblemType(406, "Not Acceptable"),
    "malformed-request": ProblemType(400, "Malformed Request"),
    "unsupported-media-type": ProblemType(415, "Unsupported Media Type"),
    "payload-too-large": ProblemType(413, "Payload Too Large"),
    "host-not-allowed": ProblemType(400, "Host Not Allowed"),
    "request-timeout": ProblemType(408, "Request Timeout"),
    "too-many-connections": ProblemType(503, "Too Many Connections"),
    "too-many-streams": ProblemType(503, "Too Many Streams"),
    "not-ready": ProblemType(503, "Not Ready"),
    "http-error": ProblemType(400, "HTTP Error"),
}

#: Every problem slug flwd answers with: the domain errors' (`flwd.errors`), then the
#: HTTP-level ones. The contract's five come first.
PROBLEM_TYPES: dict[str, ProblemType] = {
    **{slug: ProblemType(cls.status, cls.title) for slug, cls in errors.problem_classes().items()},
    **HTTP_PROBLEMS,
}

# Litestar raises plain HTTPExceptions for protocol-level failures; their status picks the slug.
_SLUG_BY_STATUS = {
    400: "malformed-request",
    401: "unauthorized",
    403: errors.PermissionDenied.slug,
    404: errors.NotFound.slug,
    405: "method-not-allowed",
    406: "not-acceptable",
    409: errors.Conflict.slug,
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
    500: errors.FlwdError.slug,
    503: "not-ready",
}


class InvalidField(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One failing field. `path` is a JSON Pointer into the request body (job arguments are
    under `/args`); for a query, path or header parameter `in` names where it was."""

    path: str
    message: str
    in_: str | None = msgspec.field(default=None, name="in")


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem details document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[InvalidField] | None = None
    retry_after: int | None = None
    request_id: str | None = None


class ProblemError(Exception):
    """Raised inside the API layer to answer with a given problem (e.g. `not-ready`)."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        status: int | None = None,
        errors: list[InvalidField] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.status = status or PROBLEM_TYPES[slug].status
        self.errors = errors
        self.headers = headers or {}


def problem_response(
    request: Request[Any, Any, Any],
    slug: str,
    detail: str,
    *,
    status: int | None = None,
    errors: list[InvalidField] | None = None,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
) -> Response[Problem]:
    """The `application/problem+json` response for `slug`; with `retry_after`, its
    `Retry-After` header too."""
    kind = PROBLEM_TYPES[slug]
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after), **(headers or {})}
    body = Problem(
        type=PROBLEM_BASE + slug,
        title=kind.title,
        status=status or kind.status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
        retry_after=retry_after,
        request_id=request_id(request.scope),
    )
    return Response(body, status_code=body.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _invalid_fields(items: list[errors.FieldError]) -> list[InvalidField]:
    return [InvalidField(path=e.path, message=e.message) for e in items]


def problem_body(slug: str, detail: str, *, instance: str, retry_after: int | None = None) -> bytes:
    """The encoded document for `slug`, for answers written below the application (a
    refused connection has no request object)."""
    kind = PROBLEM_TYPES[slug]
    body = Problem(
        type=PROBLEM_BASE + slug,
        title=kind.title,
        status=kind.status,
        detail=detail,
        instance=instance,
        retry_after=retry_after,
    )
    return msgspec.json.encode(body)


def handle_domain_error(
    request: Request[Any, Any, Any], exc: errors.FlwdError
) -> Response[Problem]:
    """Exception handler for every `flwd.errors.FlwdError`: the problem type its class
    names, with the extension members it gives (`errors`, `retry_after`)."""
    if exc.status >= 500:
        log.error("request %s failed: %s", request_id(request.scope), exc, exc_info=exc)
    fields = exc.problem_fields()
    retry_after = fields.get("retry_after")
    return problem_response(
        request,
        exc.slug,
        exc.detail,
        errors=_invalid_fields(fields["errors"]) if "errors" in fields else None,
        retry_after=retry_after,
        headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
    )


def handle_problem_error(request: Request[Any, Any, Any], exc: ProblemError) -> Response[Problem]:
    """Exception handler for `ProblemError` raised by the API layer itself."""
    return problem_response(
        request, exc.slug, exc.detail, status=exc.status, errors=exc.errors, headers=exc.headers
    )


_KEY_PART = re.compile(r"[^.\[\]]+")


def _pointer(key: str) -> str:
    """Litestar/msgspec field locations (`args.target`, `$.job_id`, `items[0]`) as JSON
    Pointers (`/args/target`)."""
    key = key.removeprefix("$")
    parts = _KEY_PART.findall(key)
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _validation_fields(exc: ValidationException) -> list[InvalidField]:
    """Litestar's `[{message, key, source}]` as `{path, message, in}`; `key` is `data` (the
    body) or a parameter name, and msgspec names unknown/missing fields in the message."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        source = getattr(item.get("source"), "value", item.get("source"))
        key = str(item.get("key") or "")
        message = str(item.get("message", ""))
        if source in (None, "body"):
            location = None
            path = _pointer(key.removeprefix("data"))
            if named := _NAMED_FIELD.search(message):
                path += _pointer(named.group(1))
            if message == "'data'":  # Litestar's wording for an absent body
                message = "A JSON request body is required"
        else:
            location, path = str(source), _pointer(key)
        fields.append(InvalidField(path=path, message=message, in_=location))
    if not fields:
        # msgspec puts the location in the message: "Expected `str`, got `int` - at `$.job_id`"
        message, _, where = str(exc.detail).partition(" - at `")
        fields.append(InvalidField(path=_pointer(where.rstrip("`")), message=message))
    return fields


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Exception handler for Litestar's own HTTP exceptions (routing, parsing, limits)."""
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        return problem_response(
            request,
            "validation-error",
            "The request is not valid; see `errors`",
            errors=_validation_fields(exc),
            headers=headers,
        )
    slug = _SLUG_BY_STATUS.get(exc.status_code, "http-error")
    if isinstance(exc, NotFoundException) and exc.detail in ("", "Not Found"):
        detail = f"No resource at {request.url.path}"
    elif isinstance(exc, MethodNotAllowedException):
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code >= 500:
        log.error("request %s failed: %s", request_id(request.scope), exc.detail, exc_info=exc)
        detail = "The server could not complete the request"
    else:
        detail = exc.detail or PROBLEM_TYPES[slug].title
    return problem_response(request, slug, detail, status=exc.status_code, headers=headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Last resort: log the traceback server side, tell the client nothing about it."""
    rid = request_id(request.scope)
    log.exception("request %s failed with an unexpected error", rid, exc_info=exc)
    return problem_response(
        request,
        errors.FlwdError.slug,
        f"The server failed unexpectedly; quote request id {rid} when reporting it",
    )


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    errors.FlwdError: handle_domain_error,
    ProblemError: handle_problem_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries documenting that a handler may answer these statuses with a problem."""
    described = {
        400: "Invalid parameters or body (validation-error, malformed-request)",
        401: "No or a refused credential (unauthorized)",
        403: "Not allowed (permission-denied)",
        404: "Not found (job-not-found, run-not-found, artifact-not-found)",
        409: "Conflict (run-not-cancellable, idempotency-conflict)",
        413: "Body larger than the configured limit (payload-too-large)",
        410: "The resume point's events were pruned by retention (events-pruned)",
        415: "Body is not JSON (unsupported-media-type)",
        422: "The job's definition is invalid (job-invalid)",
        429: "Run queue full; retry after Retry-After seconds (queue-full)",
        500: "Unexpected failure (internal-error, execution-error)",
        503: "Not ready (not-ready, storage-error)",
    }
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=described[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


__all__ = [
    "EXCEPTION_HANDLERS",
    "HTTP_PROBLEMS",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPES",
    "InvalidField",
    "Problem",
    "ProblemError",
    "problem_body",
    "problem_response",
    "problem_responses",
]
