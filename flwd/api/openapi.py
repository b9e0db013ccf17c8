"""OpenAPI details Litestar cannot infer: realistic examples of the success bodies
(`flwd.api.examples`), the bodies of streaming endpoints, and the links from a created run
to the run's routes."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)

from flwd.api.examples import RUN_ID, example_body

_SSE_EXAMPLE = (
    'id: 42\nevent: run.output\ndata: {"id":42,"type":"run.output","run_id":"' + RUN_ID + '",'
    '"job_id":"backup/daily","timestamp":"2026-01-15T10:30:01Z","level":"info",'
    '"message":"Copied 1234 files to /mnt/backup","step_id":"main","stream":"stdout"}\n\n'
)
_LOG_EXAMPLE = (
    'id: 42\nevent: log\ndata: {"id":42,"timestamp":"2026-01-15T10:30:01Z","level":"info",'
    '"message":"Starting backup of /srv/data","step_id":"main"}\n\n'
    'event: end\ndata: {"run_id":"' + RUN_ID + '","status":"success"}\n\n'
)


def _run_link(operation_id: str, description: str) -> Link:
    return Link(
        operation_id=operation_id,
        parameters={"run_id": "$response.body#/run_id"},
        description=description,
    )


#: Where a created run (`POST /runs`, `POST /runs/{run_id}/restart`) is followed up.
RUN_LINKS = {
    "getRun": _run_link("getRun", "The run, with its steps and result"),
    "listSteps": _run_link("listSteps", "The run's steps"),
    "getRunLogs": _run_link("getRunLogs", "The run's log lines (`follow=true` to stream)"),
    "streamRunEvents": _run_link("streamRunEvents", "The run's events, live"),
    "cancelRun": _run_link("cancelRun", "Cancel the run"),
    "listArtifacts": _run_link("listArtifacts", "The files the run produced"),
}
_LINKS = {"createRun": RUN_LINKS, "restartRun": RUN_LINKS}


def _success(operation: Operation) -> OpenAPIResponse | None:
    for status, response in (operation.responses or {}).items():
        if status.startswith("2") and isinstance(response, OpenAPIResponse):
            return response
    return None


@dataclass
class ExampleOperation(Operation):
    """Its success response carries the example of `flwd.api.examples` for its
    operationId, and the links of `_LINKS`."""

    def __post_init__(self) -> None:
        ok = _success(self)
        if ok is None:
            return
        found = example_body(self.operation_id or "")
        json_body = (ok.content or {}).get("application/json")
        if found is not None and json_body is not None:
            summary, value = found
            json_body.examples = {
                self.operation_id or "example": Example(summary=summary, value=value)
            }
        links = _LINKS.get(self.operation_id or "")
        if links:
            ok.links = dict(links)


def _sse(example: str) -> OpenAPIMediaType:
    return OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.STRING,
            description="Server-Sent Events; `id:` is the global event id (see docs/events.md)",
        ),
        example=example,
    )


def _set_ok_content(operation: Operation, content: dict[str, OpenAPIMediaType], keep: bool) -> None:
    ok = (operation.responses or {}).get("200")
    if isinstance(ok, OpenAPIResponse):
        ok.content = {**(ok.content or {}), **content} if keep else content


@dataclass
class EventStreamOperation(ExampleOperation):
    """200 is a `text/event-stream` of run events."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _set_ok_content(self, {"text/event-stream": _sse(_SSE_EXAMPLE)}, keep=False)


@dataclass
class LogsOperation(ExampleOperation):
    """200 is JSON log lines, or with `follow=true` a `text/event-stream` of `log` frames."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _set_ok_content(self, {"text/event-stream": _sse(_LOG_EXAMPLE)}, keep=True)


@dataclass
class DownloadOperation(Operation):
    """200 is the artifact's bytes in the artifact's own media type."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=None, content_media_type="*/*")
        _set_ok_content(self, {"*/*": OpenAPIMediaType(schema=binary)}, keep=False)
