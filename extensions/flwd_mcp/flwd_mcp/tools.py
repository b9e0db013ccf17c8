"""Tools: each job as a tool, the generic tools, and what a call returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import mcp_types as types
import msgspec

from flwd.errors import ArgumentsInvalid, FlwdError
from flwd.jobs.views import JobDetail
from flwd.models import Artifact, LogLine, Run
from flwd.states import RunStatus
from flwd_mcp import naming
from flwd_mcp.schemas import input_schema, output_schema

_encode = msgspec.json.Encoder().encode

_RUN_ID: Final = {"run_id": {"type": "string", "description": "a run id, e.g. run_01J..."}}


def job_tool(job: JobDetail) -> types.Tool:
    """The tool that runs `job` (see `flwd_mcp.naming` for its name)."""
    hints = job.annotations
    annotations = None
    if hints is not None or job.title:
        annotations = types.ToolAnnotations(
            title=job.title,
            read_only_hint=hints.read_only if hints else None,
            destructive_hint=hints.destructive if hints else None,
            idempotent_hint=hints.idempotent if hints else None,
        )
    description = job.description or job.title or f"Run the flwd job {job.id}"
    return types.Tool(
        name=naming.tool_name(job.id),
        title=job.title or job.id,
        description=f"{description}\n\n(flwd job `{job.id}`: starts a run and waits for it.)",
        input_schema=input_schema(job.args, job.secret_args),
        output_schema=output_schema(job.result_schema),
        annotations=annotations,
        _meta={"flwd/job_id": job.id},
    )


def _read_only(title: str) -> types.ToolAnnotations:
    return types.ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True)


GENERIC_TOOLS: Final = (
    types.Tool(
        name=naming.LIST_JOBS,
        description="List the flwd jobs you may run, with their tool names.",
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        annotations=_read_only("List jobs"),
    ),
    types.Tool(
        name=naming.LIST_RUNS,
        description="List runs, newest first, optionally of one job or with one status.",
        input_schema={
            "type": "object",
            "properties": {
                "job_id": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in RunStatus]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
            },
            "additionalProperties": False,
        },
        annotations=_read_only("List runs"),
    ),
    types.Tool(
        name=naming.GET_RUN,
        description="A run: its status, arguments (secrets masked), steps and result.",
        input_schema={
            "type": "object",
            "properties": _RUN_ID,
            "required": ["run_id"],
            "additionalProperties": False,
        },
        annotations=_read_only("Get a run"),
    ),
    types.Tool(
        name=naming.READ_LOG,
        description="Read a run's log: its last `tail` lines (default 50), or up to `limit` "
        "lines after the line id `since`.",
        input_schema={
            "type": "object",
            "properties": {
                **_RUN_ID,
                "tail": {"type": "integer", "minimum": 1, "maximum": 5000},
                "since": {"type": "integer", "minimum": 0, "description": "a line id"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 5000},
            },
            "required": ["run_id"],
            "additionalProperties": False,
        },
        annotations=_read_only("Read a run's log"),
    ),
    types.Tool(
        name=naming.CANCEL_RUN,
        description="Cancel a pending or running run; answers once its processes are gone.",
        input_schema={
            "type": "object",
            "properties": _RUN_ID,
            "required": ["run_id"],
            "additionalProperties": False,
        },
        annotations=types.ToolAnnotations(
            title="Cancel a run", destructive_hint=True, idempotent_hint=True
        ),
    ),
    types.Tool(
        name=naming.RESTART_RUN,
        description="Start a new run of a run's job with the same arguments; secret "
        "arguments are never stored and must be given again in `args`.",
        input_schema={
            "type": "object",
            "properties": {**_RUN_ID, "args": {"type": "object"}},
            "required": ["run_id"],
            "additionalProperties": False,
        },
        annotations=types.ToolAnnotations(title="Restart a run", read_only_hint=False),
    ),
)


def builtins(value: Any) -> Any:
    """Structs as JSON-ready data (times as RFC 3339 text)."""
    return msgspec.to_builtins(value)


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[text(message)], is_error=True)


def error_result(exc: FlwdError) -> types.CallToolResult:
    """A domain error as a tool error; invalid arguments name each failing field by its
    JSON Pointer into the arguments."""
    if isinstance(exc, ArgumentsInvalid) and exc.errors:
        lines = [f"{e.path or '/'}: {e.message}" for e in exc.errors]
        return tool_error("invalid arguments:\n" + "\n".join(lines))
    return tool_error(exc.detail)


def structured(value: Any, summary: str) -> types.CallToolResult:
    data = builtins(value)
    return types.CallToolResult(
        content=[text(summary), text(_encode(data).decode())], structured_content=data
    )


def format_log(lines: Sequence[LogLine]) -> str:
    return "\n".join(
        f"[{line.step_id}] {line.message}" if line.step_id else line.message for line in lines
    )


def run_outcome(run: Run, artifacts: Sequence[Artifact], urls: Sequence[str]) -> dict[str, Any]:
    """The `structuredContent` of a job tool's call (`flwd_mcp.schemas.output_schema`)."""
    result = None
    if run.result is not None and run.result.value is not None:
        result = {"value": run.result.value}
    return {
        "run_id": run.run_id,
        "job_id": run.job_id,
        "status": run.status.value,
        "reason": None if run.reason is None else run.reason.value,
        "error": run.error,
        "exit_code": run.exit_code,
        "result": result,
        "artifacts": [
            {
                "id": a.id,
                "name": a.name,
                "media_type": a.media_type,
                "size_bytes": a.size_bytes,
                "url": url,
            }
            for a, url in zip(artifacts, urls, strict=True)
        ],
    }


def finished_call(
    run: Run, outcome: dict[str, Any], tail: Sequence[LogLine]
) -> types.CallToolResult:
    """What a job tool answers once its run has ended: a tool error unless it succeeded."""
    log = format_log(tail) or "(no output)"
    if run.status is RunStatus.SUCCESS:
        head = f"run {run.run_id} of {run.job_id} succeeded"
        if outcome["result"] is not None:
            head += "; result: " + _encode(outcome["result"]["value"]).decode()
    else:
        why = run.reason.value if run.reason else run.status.value
        head = f"run {run.run_id} of {run.job_id} ended {run.status.value} ({why})"
        if run.error:
            head += f": {run.error}"
    return types.CallToolResult(
        content=[text(head), text(f"last log lines:\n{log}")],
        structured_content=outcome,
        is_error=run.status is not RunStatus.SUCCESS,
    )
