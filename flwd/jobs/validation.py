"""The `validate_job` hook applied to loaded jobs: a job some plugin finds a problem with
(a security profile it may not ask for, ...) becomes an invalid job folder whose
diagnostics are those problems, for the server's catalogue and for `flwd validate`."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pluggy

from flwd.models import Diagnostic, InvalidJob, JobSpec
from flwd.settings import Settings

#: The file a plugin's problem is reported against: the job's definition.
CONFIG_FILE = "config.yaml"


def validate_jobs(
    pm: pluggy.PluginManager, settings: Settings, results: Iterable[JobSpec | InvalidJob]
) -> list[JobSpec | InvalidJob]:
    """`results` with every job some plugin's `validate_job` objects to turned invalid.
    No hook call at all when no plugin implements it."""
    if not pm.hook.validate_job.get_hookimpls():
        return list(results)
    out: list[JobSpec | InvalidJob] = []
    for result in results:
        if isinstance(result, JobSpec):
            problems = [
                str(problem)
                for answer in pm.hook.validate_job(job=result, settings=settings)
                for problem in answer or ()
            ]
            if problems:
                result = InvalidJob(
                    id=result.id,
                    source=result.source,
                    path=result.path,
                    diagnostics=tuple(
                        Diagnostic(file=os.path.join(result.path, CONFIG_FILE), reason=problem)
                        for problem in problems
                    ),
                )
        out.append(result)
    return out
