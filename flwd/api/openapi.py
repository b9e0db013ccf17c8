"""OpenAPI details Litestar cannot infer: the success bodies of streaming endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

_SSE_EXAMPLE = (
    'id: 42\nevent: run.output\ndata: {"id":42,"type":"run.output","run_id":"run_01HX...",'
    '"job_id":"backup/daily","timestamp":"2024-01-15T10:30:01Z","level":"info",'
    '"message":"Processing...","step_id":"main","stream":"stdout"}\n\n'
)
_LOG_EXAMPLE = (
    'id: 42\nevent: log\ndata: {"id":42,"timestamp":"2024-01-15T10:30:01Z","level":"info",'
    '"message":"Starting backup...","step_id":"main"}\n\n'
    'event: end\ndata: {"run_id":"run_01HX...","status":"success"}\n\n'
)


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
class EventStreamOperation(Operation):
    """200 is a `text/event-stream` of run events."""

    def __post_init__(self) -> None:
        _set_ok_content(self, {"text/event-stream": _sse(_SSE_EXAMPLE)}, keep=False)


@dataclass
class LogsOperation(Operation):
    """200 is JSON log lines, or with `follow=true` a `text/event-stream` of `log` frames."""

    def __post_init__(self) -> None:
        _set_ok_content(self, {"text/event-stream": _sse(_LOG_EXAMPLE)}, keep=True)


@dataclass
class DownloadOperation(Operation):
    """200 is the artifact's bytes in the artifact's own media type."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=None, content_media_type="*/*")
        _set_ok_content(self, {"*/*": OpenAPIMediaType(schema=binary)}, keep=False)
