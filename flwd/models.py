"""msgspec Structs that cross layers: job definitions, runs, steps, events, artifacts.

Everything here is frozen: a changed job is a new `JobSpec` in a new catalog, a changed run
is a new `Run` read back from storage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from flwd.states import FailureReason, RunStatus, StepStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One executable unit of a job, resolved at discovery time.

    `argv` is what is executed (never through a shell built from arguments); a `run:` or
    `command:` string becomes `["/bin/sh", "-c", text]`, a script becomes
    `[*interpreter, path]`.
    """

    id: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = ()
    timeout: float | None = None
    env: dict[str, str] = {}
    retries: int = 0
    script: str | None = None


class ConcurrencySpec(msgspec.Struct, frozen=True, kw_only=True):
    """At most `limit` runs of the job at once; with `key`, at most `limit` per key value.

    `key` is a template over the arguments, e.g. `"{target}"`: only `{name}` placeholders
    naming top-level arguments are substituted.
    """

    limit: int
    key: str | None = None


class RetentionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How long a job's finished runs are kept (`retention:` in config.yaml).

    `max_age` in seconds, `max_runs` a count; `None` takes the server's default and `0`
    means no limit of that kind. See docs/operations.md ("Retention").
    """

    max_age: float | None = None
    max_runs: int | None = None


class ToolAnnotations(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Hints about what a job does, for clients that run jobs on someone's behalf (the
    MCP extension turns them into a tool's annotations); `annotations:` in config.yaml.
    `None` means not said. Hints only: nothing enforces them."""

    #: the job only reads; it changes nothing outside its run
    read_only: bool | None = None
    #: the job may delete or overwrite things (only meaningful when not read-only)
    destructive: bool | None = None
    #: running it again with the same arguments has no further effect
    idempotent: bool | None = None


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A valid, runnable job as discovered from `config.yaml` and its scripts."""

    id: str
    name: str
    namespace: str
    source: str
    path: str
    title: str | None = None  # config.yaml `name`: a display title (`name` is the id tail)
    description: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    args: dict[str, Any] = {}
    steps: tuple[StepSpec, ...] = ()
    env: dict[str, str] = {}
    timeout: float | None = None
    concurrency: ConcurrencySpec | None = None
    retries: int = 0
    security_profile: str | None = None
    result_schema: dict[str, Any] | None = None
    #: JSON Pointers of the secret values inside the arguments, sorted (`/password`,
    #: `/creds/token`): see `flwd.jobs.schemas.secret_pointers`
    secret_args: tuple[str, ...] = ()
    digest: str = ""
    retention: RetentionSpec | None = None
    #: `annotations:` in config.yaml: hints for agents (read-only, destructive, idempotent)
    annotations: ToolAnnotations | None = None
    #: what discovery found suspicious but not wrong (`flwd validate` prints them)
    warnings: tuple[Diagnostic, ...] = ()


class Diagnostic(msgspec.Struct, frozen=True, kw_only=True):
    """Why a job folder is not runnable: the file, the line where known, and what to fix."""

    file: str
    reason: str
    line: int | None = None


class InvalidJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job folder discovery found but could not load; listed, never runnable."""

    id: str
    source: str
    path: str
    diagnostics: tuple[Diagnostic, ...]


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run's structured result: `value` is the last step (in declaration order) that
    wrote `$FLWD_RESULT_FILE`; `steps` holds every step's value by step id."""

    value: Any = None
    steps: dict[str, Any] = {}


class Run(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    job_id: str
    status: RunStatus
    created_at: datetime
    tenant: str = "default"
    args: dict[str, Any] = {}
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: FailureReason | None = None
    error: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    result: Result | None = None
    job_digest: str = ""


class Step(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    step_id: str
    status: StepStatus
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: FailureReason | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One journal event. `id` is global and strictly increasing across all runs."""

    id: int
    type: str
    run_id: str
    job_id: str
    timestamp: datetime
    data: dict[str, Any] = {}


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    run_id: str
    name: str
    path: str
    media_type: str
    size_bytes: int
    sha256: str
    created_at: datetime


class LogLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of a run's output as served by the logs endpoint. `id` is the event id of
    the `run.output` event the line came from, usable as `since` / `Last-Event-ID`."""

    id: int
    timestamp: datetime
    level: str
    message: str
    step_id: str | None = None


class ContainmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How the server keeps every process of a run from outliving it (system info):
    `mode` is `cgroup` or `subreaper`; `path` is the cgroup v2 directory holding the runs'
    cgroups (cgroup mode only); `guarantee` says in words what the mode ensures."""

    mode: str
    guarantee: str
    path: str | None = None


# -- response bodies of the HTTP API, decoded by the client as the same Structs -----------


class RunList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of runs, newest first, with how many match the filters in all."""

    runs: list[Run]
    total: int


class StepList(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[Step]


class RunDetail(Run, frozen=True, kw_only=True):
    """`GET /api/v1/runs/{run_id}`: the run with its steps (what `flwd runs show --json`
    prints in both modes)."""

    steps: list[Step] = []

    @classmethod
    def of(cls, run: Run, steps: list[Step]) -> RunDetail:
        fields = {name: getattr(run, name) for name in run.__struct_fields__}
        return cls(**fields, steps=steps)


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
