"""The shapes of jobs as the API serves them and the CLI prints them, in both its modes.

`JobSummary` is one item of `GET /api/v1/jobs` (`JobList`); `JobDetail` is
`GET /api/v1/jobs/{id}`: the contract's fields first, then additions a client written
against the contract can ignore. `flwd jobs --json` and `flwd jobs show --json` print these
same Structs, locally or through `FlwdClient`.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from flwd.models import ConcurrencySpec, Diagnostic, InvalidJob, JobSpec, ToolAnnotations


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A job as listed: the contract's `{id, name, namespace, version, description,
    source}` plus its `tags`."""

    id: str
    name: str
    namespace: str
    version: str | None = None
    description: str | None = None
    source: str
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, job: JobSpec) -> JobSummary:
        return cls(
            id=job.id,
            name=job.name,
            namespace=job.namespace,
            version=job.version,
            description=job.description,
            source=job.source,
            tags=job.tags,
        )


class InvalidJobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A job folder that was found but cannot run, with what to fix."""

    id: str
    source: str
    path: str
    diagnostics: tuple[Diagnostic, ...]

    @classmethod
    def of(cls, bad: InvalidJob) -> InvalidJobInfo:
        return cls(id=bad.id, source=bad.source, path=bad.path, diagnostics=bad.diagnostics)


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /api/v1/jobs`: runnable jobs, and the folders that failed to load."""

    jobs: list[JobSummary]
    invalid: list[InvalidJobInfo] = []


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A step of a job: its id, what it waits for, its script file (None for a `run:` or
    `command:` step), timeout and retries. Commands are not shown: they can embed paths."""

    id: str
    needs: tuple[str, ...] = ()
    script: str | None = None
    timeout: float | None = None
    retries: int = 0


class JobDetail(msgspec.Struct, frozen=True, kw_only=True):
    """A job with its argument schema (`args`, JSON Schema 2020-12), its steps and every
    setting that shapes how it runs. `secret_args` holds the JSON Pointers of the secret
    values inside `args` (`/password`, `/creds/token`), sorted, so that a form or an MCP
    client can mark nested secrets without reading the schema again."""

    id: str
    name: str
    namespace: str
    version: str | None = None
    description: str | None = None
    source: str
    args: dict[str, Any] = {}
    path: str = ""
    title: str | None = None
    tags: tuple[str, ...] = ()
    steps: list[StepInfo] = []
    timeout: float | None = None
    concurrency: ConcurrencySpec | None = None
    retries: int = 0
    security_profile: str | None = None
    result_schema: dict[str, Any] | None = None
    secret_args: list[str] = []
    digest: str = ""
    #: `annotations:` of config.yaml (hints for agents), when given
    annotations: ToolAnnotations | None = None

    @classmethod
    def of(cls, job: JobSpec) -> JobDetail:
        return cls(
            id=job.id,
            name=job.name,
            namespace=job.namespace,
            version=job.version,
            description=job.description,
            source=job.source,
            args=job.args,
            path=job.path,
            title=job.title,
            tags=job.tags,
            steps=[
                StepInfo(
                    id=s.id, needs=s.needs, script=s.script, timeout=s.timeout, retries=s.retries
                )
                for s in job.steps
            ],
            timeout=job.timeout,
            concurrency=job.concurrency,
            retries=job.retries,
            security_profile=job.security_profile,
            result_schema=job.result_schema,
            secret_args=sorted(job.secret_args),
            digest=job.digest,
            annotations=job.annotations,
        )


def invalid_job_dict(bad: InvalidJob) -> dict[str, Any]:
    """An invalid job folder with its diagnostics, as plain data (`flwd validate --json`)."""
    return msgspec.to_builtins(InvalidJobInfo.of(bad))  # type: ignore[no-any-return]


def format_diagnostic(
    diagnostic: Diagnostic, *, relative_to: str | None = None, warning: bool = False
) -> str:
    """`file:line: reason` (`file: reason` when the line is unknown), like a compiler;
    `file:line: warning: reason` for a warning. The file is shown relative to
    `relative_to` when it lies below it."""
    file = diagnostic.file
    if relative_to is not None:
        relative = os.path.relpath(file, relative_to)
        if not relative.startswith(".."):
            file = relative
    where = f"{file}:{diagnostic.line}" if diagnostic.line else file
    return f"{where}: {'warning: ' if warning else ''}{diagnostic.reason}"
