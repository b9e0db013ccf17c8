"""The JSON shapes of jobs as the API contract shows them, shared by the CLI and the API.

`job_summary` is one item of `GET /api/v1/jobs`; `job_detail` is `GET /api/v1/jobs/{id}`:
the contract's fields first, then additions a client written against the contract can
ignore.
"""

from __future__ import annotations

import os
from typing import Any

from flwd.models import Diagnostic, InvalidJob, JobSpec


def job_summary(job: JobSpec) -> dict[str, Any]:
    """`{id, name, namespace, version, description, source}` exactly as in the contract."""
    return {
        "id": job.id,
        "name": job.name,
        "namespace": job.namespace,
        "version": job.version,
        "description": job.description,
        "source": job.source,
    }


def job_detail(job: JobSpec) -> dict[str, Any]:
    """The contract's job detail (summary + `args`) plus `title`, `tags`, `steps`,
    `timeout`, `concurrency`, `retries`, `security_profile`, `result_schema`,
    `secret_args` and `digest`. Step commands are not included: they are the server's
    business, and can embed paths."""
    return {
        **job_summary(job),
        "args": job.args,
        "title": job.title,
        "tags": list(job.tags),
        "steps": [
            {
                "id": step.id,
                "needs": list(step.needs),
                "script": step.script,
                "timeout": step.timeout,
                "retries": step.retries,
            }
            for step in job.steps
        ],
        "timeout": job.timeout,
        "concurrency": None
        if job.concurrency is None
        else {"limit": job.concurrency.limit, "key": job.concurrency.key},
        "retries": job.retries,
        "security_profile": job.security_profile,
        "result_schema": job.result_schema,
        "secret_args": sorted(job.secret_args),
        "digest": job.digest,
    }


def diagnostic_dict(diagnostic: Diagnostic) -> dict[str, Any]:
    return {"file": diagnostic.file, "line": diagnostic.line, "reason": diagnostic.reason}


def invalid_job_dict(bad: InvalidJob) -> dict[str, Any]:
    """An invalid job folder with its diagnostics."""
    return {
        "id": bad.id,
        "source": bad.source,
        "path": bad.path,
        "diagnostics": [diagnostic_dict(d) for d in bad.diagnostics],
    }


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
