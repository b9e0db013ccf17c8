"""Request and response bodies of the HTTP API, as msgspec Structs so that validation and
the OpenAPI document come from the same definitions. Field names follow the contract."""

from __future__ import annotations

from typing import Any

import msgspec

from flwd.models import Artifact, ContainmentInfo, Diagnostic, JobSpec, LogLine, Run, Step


class CreateRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /api/v1/runs`. `async: false` waits for the run to end."""

    job_id: str
    args: dict[str, Any] | None = None
    tenant: str = "default"
    async_: bool = msgspec.field(default=True, name="async")


class RestartRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /api/v1/runs/{run_id}/restart` (optional): arguments to override,
    which must include every secret argument since secrets are never stored readable."""

    args: dict[str, Any] | None = None
    async_: bool = msgspec.field(default=True, name="async")


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A job as listed by `GET /api/v1/jobs`."""

    id: str
    name: str
    namespace: str
    source: str
    version: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, job: JobSpec) -> JobSummary:
        return cls(
            id=job.id,
            name=job.name,
            namespace=job.namespace,
            source=job.source,
            version=job.version,
            description=job.description,
            tags=job.tags,
        )


class InvalidJobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A job folder that was found but cannot run, with what to fix."""

    id: str
    source: str
    path: str
    diagnostics: tuple[Diagnostic, ...]


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    jobs: list[JobSummary]
    invalid: list[InvalidJobInfo] = []


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    needs: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0


class JobDetail(msgspec.Struct, frozen=True, kw_only=True):
    """A job with its argument schema (`args`, JSON Schema 2020-12) and steps."""

    id: str
    name: str
    namespace: str
    source: str
    version: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    args: dict[str, Any] = {}
    steps: list[StepInfo] = []
    timeout: float | None = None
    result_schema: dict[str, Any] | None = None
    digest: str = ""

    @classmethod
    def of(cls, job: JobSpec) -> JobDetail:
        return cls(
            id=job.id,
            name=job.name,
            namespace=job.namespace,
            source=job.source,
            version=job.version,
            description=job.description,
            tags=job.tags,
            args=job.args,
            steps=[
                StepInfo(id=s.id, needs=s.needs, timeout=s.timeout, retries=s.retries)
                for s in job.steps
            ],
            timeout=job.timeout,
            result_schema=job.result_schema,
            digest=job.digest,
        )


class RunList(msgspec.Struct, frozen=True, kw_only=True):
    runs: list[Run]
    total: int


class StepList(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[Step]


class LogList(msgspec.Struct, frozen=True, kw_only=True):
    """Log lines in order; each `id` can be passed back as `since` to continue."""

    logs: list[LogLine]


class ArtifactList(msgspec.Struct, frozen=True, kw_only=True):
    artifacts: list[Artifact]
    total: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    version: str
    uptime_seconds: int


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    store: bool
    watcher: bool


class SourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    path: str


class SystemInfo(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    sources: list[SourceInfo]
    extensions: list[str]
    #: how the server keeps every process of a run from outliving it
    containment: ContainmentInfo | None = None
