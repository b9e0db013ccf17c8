"""Request and response bodies of the HTTP API, as msgspec Structs so that validation and
the OpenAPI document come from the same definitions. Field names follow the contract.

Response bodies are the Structs of `flwd.models` and `flwd.jobs.views`, re-exported here:
the client decodes the same classes the server encodes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from flwd.jobs.views import InvalidJobInfo, JobDetail, JobList, JobSummary, StepInfo
from flwd.models import (
    ArtifactList,
    Health,
    LogList,
    Ready,
    RunList,
    SourceInfo,
    StepList,
    SystemInfo,
)

#: A tenant name: 1-64 letters, digits, `.`, `_` or `-` (docs/api.md).
TENANT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
TENANT_MAX = 64
Tenant = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=TENANT_MAX,
        pattern=TENANT_PATTERN,
        description="1-64 letters, digits, '.', '_' or '-'",
    ),
]


class CreateRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /api/v1/runs`. `async: false` waits for the run to end."""

    job_id: str
    args: dict[str, Any] | None = None
    #: absent: the caller's tenant when it is confined to one, else `default`
    tenant: Tenant | None = None
    async_: bool = msgspec.field(default=True, name="async")


class RestartRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /api/v1/runs/{run_id}/restart` (optional): arguments to override,
    which must include every secret argument since secrets are never stored readable."""

    args: dict[str, Any] | None = None
    async_: bool = msgspec.field(default=True, name="async")


class JobsChanged(msgspec.Struct, frozen=True, kw_only=True):
    """Data of a `jobs.changed` event on `/api/v1/events/jobs`: the ids of the valid jobs
    the catalogue gained, changed or lost, and every folder now invalid."""

    timestamp: datetime
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    invalid: list[str] = []


__all__ = [
    "ArtifactList",
    "CreateRun",
    "Health",
    "InvalidJobInfo",
    "JobDetail",
    "JobList",
    "JobSummary",
    "JobsChanged",
    "LogList",
    "Ready",
    "RestartRun",
    "RunList",
    "SourceInfo",
    "StepInfo",
    "StepList",
    "SystemInfo",
]
