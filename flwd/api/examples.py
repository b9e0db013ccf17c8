"""Realistic example bodies for the OpenAPI document, one per JSON success response.

They are built from the very Structs the API returns (so a renamed field fails here, at
import, rather than leaving a stale example) and follow the contract's story: the job
`backup/daily` run with `target=/mnt/backup`. Litestar's own generated examples are
random strings and dates, so none are generated (`generate_examples=False`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from flwd import __version__
from flwd.engine.containment import CGROUP, CGROUP_GUARANTEE
from flwd.jobs.views import JobDetail, JobList, JobSummary, StepInfo
from flwd.models import (
    Artifact,
    ArtifactList,
    ContainmentInfo,
    Health,
    LogLine,
    LogList,
    Ready,
    Result,
    Run,
    RunDetail,
    RunList,
    SourceInfo,
    Step,
    StepList,
    SystemInfo,
)
from flwd.states import FailureReason, RunStatus, StepStatus

#: A real run id: `run_` and a ULID (as `RunService` makes them).
RUN_ID = "run_01JH7Q8Z3K9V2M4N6P8R0T2W4Y"
ARTIFACT_ID = "artifact_01JH7QB2D4F6G8J0K2M4N6P8R0"
JOB_ID = "backup/daily"
ARGS = {"target": "/mnt/backup"}
CREATED = datetime(2026, 1, 15, 10, 30, 0, tzinfo=UTC)
STARTED = datetime(2026, 1, 15, 10, 30, 0, 412000, tzinfo=UTC)
FINISHED = datetime(2026, 1, 15, 10, 35, 2, 87000, tzinfo=UTC)
DIGEST = "5d41402abc4b2a76b9719d911017c592a3f0e7a1c6d2b8e4f0a9c3d7e1b5f2a8"

_SUMMARY = JobSummary(
    id=JOB_ID,
    name="daily",
    namespace="backup",
    version="1.0.0",
    description="Daily backup job",
    source="local-fs",
    tags=("backup",),
)
_RESULT = Result(value={"files_backed_up": 1234, "total_size_mb": 5678})
_STEP = Step(
    run_id=RUN_ID,
    step_id="main",
    status=StepStatus.SUCCESS,
    attempt=1,
    started_at=STARTED,
    finished_at=FINISHED,
    exit_code=0,
)
_FINISHED_RUN = RunDetail(
    run_id=RUN_ID,
    job_id=JOB_ID,
    status=RunStatus.SUCCESS,
    created_at=CREATED,
    args=ARGS,
    started_at=STARTED,
    finished_at=FINISHED,
    exit_code=0,
    result=_RESULT,
    job_digest=DIGEST,
    steps=[_STEP],
)
_PENDING_RUN = Run(
    run_id=RUN_ID,
    job_id=JOB_ID,
    status=RunStatus.PENDING,
    created_at=CREATED,
    args=ARGS,
    job_digest=DIGEST,
)
_CANCELLED_RUN = Run(
    run_id=RUN_ID,
    job_id=JOB_ID,
    status=RunStatus.CANCELLED,
    created_at=CREATED,
    args=ARGS,
    started_at=STARTED,
    finished_at=datetime(2026, 1, 15, 10, 31, 5, tzinfo=UTC),
    signal=15,
    job_digest=DIGEST,
)
_FAILED_RUN = Run(
    run_id="run_01JH7R2C5E7G9J1K3M5N7Q9S1V",
    job_id=JOB_ID,
    status=RunStatus.FAILED,
    created_at=datetime(2026, 1, 14, 10, 30, tzinfo=UTC),
    args={"target": "/mnt/offline"},
    started_at=datetime(2026, 1, 14, 10, 30, 0, 380000, tzinfo=UTC),
    finished_at=datetime(2026, 1, 14, 10, 30, 1, 950000, tzinfo=UTC),
    reason=FailureReason.EXIT_CODE,
    error="step main exited with code 2",
    exit_code=2,
    job_digest=DIGEST,
)

#: operationId -> (summary, body) of its JSON success response.
EXAMPLES: dict[str, tuple[str, Any]] = {
    "listJobs": ("The catalog", JobList(jobs=[_SUMMARY])),
    "getJob": (
        "A job with its argument schema",
        JobDetail(
            id=JOB_ID,
            name="daily",
            namespace="backup",
            version="1.0.0",
            description="Daily backup job",
            source="local-fs",
            args={
                "type": "object",
                "properties": {
                    "target": {"type": "string", "description": "Backup target directory"}
                },
                "required": ["target"],
            },
            path="/opt/flwd/jobs/backup/daily",
            tags=("backup",),
            steps=[StepInfo(id="main", script="run.sh", timeout=3600.0)],
            timeout=3600.0,
            digest=DIGEST,
        ),
    ),
    "createRun": ("A run accepted (`async: true`)", _PENDING_RUN),
    "restartRun": ("The new run", _PENDING_RUN),
    "listRuns": ("Newest first", RunList(runs=[_FINISHED_RUN, _FAILED_RUN], total=42)),
    "getRun": ("A finished run with its result", _FINISHED_RUN),
    "cancelRun": ("Cancelled while running", _CANCELLED_RUN),
    "listSteps": ("One step", StepList(steps=[_STEP])),
    "getRunLogs": (
        "Log lines",
        LogList(
            logs=[
                LogLine(
                    id=1041,
                    timestamp=STARTED,
                    level="info",
                    message="Starting backup of /srv/data",
                    step_id="main",
                ),
                LogLine(
                    id=1187,
                    timestamp=FINISHED,
                    level="info",
                    message="Backup complete",
                    step_id="main",
                ),
            ]
        ),
    ),
    "listArtifacts": (
        "A run's artifacts",
        ArtifactList(
            artifacts=[
                Artifact(
                    id=ARTIFACT_ID,
                    run_id=RUN_ID,
                    name="backup-archive",
                    path="backup.tar.gz",
                    media_type="application/gzip",
                    size_bytes=12345678,
                    sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    created_at=FINISHED,
                )
            ],
            total=1,
        ),
    ),
    "health": ("Healthy", Health(status="healthy", version=__version__, uptime_seconds=3600)),
    "ready": ("Ready", Ready(status="ready", store=True, watcher=True)),
    "systemInfo": (
        "This server",
        SystemInfo(
            version=__version__,
            sources=[SourceInfo(name="local-fs", type="fs", path="/opt/flwd/jobs")],
            extensions=["tui", "mcp"],
            containment=ContainmentInfo(
                mode=CGROUP, guarantee=CGROUP_GUARANTEE, path="/sys/fs/cgroup/flwd.service/runs"
            ),
        ),
    ),
}


def example_body(operation_id: str) -> tuple[str, Any] | None:
    """The summary and JSON-ready body of `operation_id`'s example, if it has one."""
    found = EXAMPLES.get(operation_id)
    if found is None:
        return None
    summary, body = found
    return summary, msgspec.to_builtins(body)
