"""Fixed API answers (respx) for the screenshots and the error-path tests: fixed ids,
times and lines, so the rendered screens are the same on every run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import respx

BASE = "http://flwd.test:8080"
API = BASE + "/api/v1"
NOW = datetime(2026, 11, 29, 12, 1, 0, tzinfo=UTC)
RUN_ID = "run_01JQ0000000000000000000042"

JOBS: dict[str, Any] = {
    "jobs": [
        {
            "id": "hello",
            "name": "hello",
            "namespace": "",
            "version": "1.0.0",
            "description": "Say hello and return a result",
            "source": "local-fs",
        },
        {
            "id": "backup/daily",
            "name": "daily",
            "namespace": "backup",
            "version": "2.1.0",
            "description": "Nightly database backup to object storage",
            "source": "local-fs",
            "tags": ["ops"],
        },
        {
            "id": "examples/dag",
            "name": "dag",
            "namespace": "examples",
            "version": "1.0.0",
            "description": "Four steps in a diamond",
            "source": "local-fs",
        },
        {
            "id": "examples/secret",
            "name": "secret",
            "namespace": "examples",
            "description": "Uses secret arguments",
            "source": "local-fs",
        },
    ],
    "invalid": [
        {
            "id": "broken",
            "source": "local-fs",
            "path": "jobs/broken",
            "diagnostics": [
                {
                    "file": "config.yaml",
                    "line": 3,
                    "reason": "steps[0].script: file not found: run.sh",
                }
            ],
        },
    ],
}

DEPLOY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"token": {"type": "string", "format": "secret", "minLength": 4}},
    "properties": {
        "target": {"type": "string", "description": "Host to deploy to", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 2},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5},
        "dry_run": {"type": "boolean", "default": True, "description": "Only print the plan"},
        "mode": {"enum": ["rolling", "blue-green", "recreate"], "default": "rolling"},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["web", "eu"]},
        "db": {
            "type": "object",
            "description": "Database settings",
            "properties": {
                "host": {"type": "string", "default": "db.internal"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            "required": ["host"],
        },
        "password": {"$ref": "#/$defs/token", "description": "Deploy key"},
        "extra": {
            "oneOf": [{"type": "string"}, {"type": "object"}],
            "description": "Free-form JSON (oneOf)",
        },
    },
    "required": ["target", "password"],
}

DEPLOY_JOB: dict[str, Any] = {
    "id": "backup/daily",
    "name": "daily",
    "namespace": "backup",
    "version": "2.1.0",
    "description": "Nightly database backup to object storage",
    "source": "local-fs",
    "args": DEPLOY_SCHEMA,
    "secret_args": ["/password"],
    "steps": [{"id": "main"}],
}


def stamp(seconds: int) -> str:
    return f"2026-11-29T12:00:{seconds:02d}Z"


def run_body(n: int, status: str, job: str = "backup/daily", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "run_id": f"run_01JQ00000000000000000000{n:02d}",
        "job_id": job,
        "status": status,
        "created_at": stamp(n % 60),
        "tenant": "default",
    }
    if status != "pending":
        body["started_at"] = stamp(n % 60)
    if status in ("success", "failed", "cancelled"):
        body["finished_at"] = stamp(min(n % 60 + 3, 59))
        body["exit_code"] = {"success": 0, "failed": 2, "cancelled": None}[status]
    body.update(extra)
    return body


RUNS = [
    run_body(42, "running", "examples/dag"),
    run_body(41, "success", "hello", result={"value": {"greeting": "hello"}}),
    run_body(40, "failed", reason="exit_code", error="step main exited with 2"),
    run_body(39, "cancelled", "examples/dag"),
    run_body(38, "pending", "hello"),
    *[run_body(n, "success", "hello") for n in range(37, 20, -1)],
]

DAG_JOB: dict[str, Any] = {
    "id": "examples/dag",
    "name": "dag",
    "namespace": "examples",
    "version": "1.0.0",
    "source": "local-fs",
    "description": "Four steps in a diamond",
    "steps": [
        {"id": "fetch"},
        {"id": "lint", "needs": ["fetch"]},
        {"id": "test", "needs": ["fetch"]},
        {"id": "package", "needs": ["lint", "test"]},
    ],
}

STEPS = [
    {
        "run_id": RUN_ID,
        "step_id": "fetch",
        "status": "success",
        "attempt": 1,
        "started_at": stamp(1),
        "finished_at": stamp(3),
        "exit_code": 0,
    },
    {
        "run_id": RUN_ID,
        "step_id": "lint",
        "status": "success",
        "attempt": 1,
        "started_at": stamp(3),
        "finished_at": stamp(5),
        "exit_code": 0,
    },
    {
        "run_id": RUN_ID,
        "step_id": "test",
        "status": "running",
        "attempt": 2,
        "started_at": stamp(4),
    },
    {"run_id": RUN_ID, "step_id": "package", "status": "pending"},
]


def log_line(i: int, message: str, level: str = "info", step: str = "test") -> dict[str, Any]:
    return {
        "id": 1000 + i,
        "timestamp": stamp(5),
        "level": level,
        "message": message,
        "step_id": step,
    }


LOGS = [
    log_line(0, "collecting 128 tests", step="test"),
    *[log_line(i, f"tests/test_part_{i}.py ....... [{i * 6}%]") for i in range(1, 6)],
    log_line(
        6,
        "[flwd: 1895142 lines (189514200 bytes) of output were dropped between the "
        "first 8388608 and the last 2101248 bytes of the run's output, which are kept]",
        level="warning",
    ),
    log_line(7, "tests/test_part_98.py ....... [98%]"),
    log_line(8, "DeprecationWarning: datetime.utcnow() is deprecated", level="error"),
    log_line(9, "tests/test_part_99.py ....... [99%]"),
]

ARTIFACTS = [
    {
        "id": "art_01",
        "run_id": RUN_ID,
        "name": "report.csv",
        "path": "report.csv",
        "media_type": "text/csv",
        "size_bytes": 2048,
        "sha256": "ab" * 32,
        "created_at": stamp(6),
    },
]


def mock_api(router: respx.Router) -> None:
    """Every route the screens read, answered from the data above."""
    router.get(f"{API}/jobs").mock(return_value=httpx.Response(200, json=JOBS))
    router.get(f"{API}/jobs/backup/daily").mock(return_value=httpx.Response(200, json=DEPLOY_JOB))
    router.get(f"{API}/jobs/examples/dag").mock(return_value=httpx.Response(200, json=DAG_JOB))
    router.get(f"{API}/runs").mock(
        return_value=httpx.Response(200, json={"runs": RUNS, "total": 4213})
    )
    detail = {**RUNS[0], "steps": STEPS}
    router.get(f"{API}/runs/{RUN_ID}").mock(return_value=httpx.Response(200, json=detail))
    router.get(f"{API}/runs/{RUN_ID}/logs").mock(
        return_value=httpx.Response(200, json={"logs": LOGS})
    )
    router.get(f"{API}/artifacts").mock(
        return_value=httpx.Response(200, json={"artifacts": ARTIFACTS, "total": 1})
    )
    router.get(f"{API}/health").mock(
        return_value=httpx.Response(
            200, json={"status": "ok", "version": "0.1.0", "uptime_seconds": 1}
        )
    )
