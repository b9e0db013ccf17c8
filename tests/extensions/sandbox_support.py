"""Helpers of the sandbox tests: a plugin that applies a fixed `StepPolicy` to every step
(what the security extension's `prepare_step` does with its profile's), and a real
`RunService` with it.

Data and job dirs are made under a directory other users can search, as a server that
gives each run a user of its own needs (`tmp_path` is not: pytest makes it 0700).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from flwd_security import sandbox
from flwd_security.policy import StepPolicy

from flwd.engine.service import RunService
from flwd.engine.step_process import StepContext
from flwd.hookspecs import hookimpl
from flwd.jobs.registry import JobRegistry
from flwd.models import Event, Run
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings


class PolicyPlugin:
    """Applies `policy` to every step; forgets a run when it has finished."""

    def __init__(self, policy: StepPolicy) -> None:
        self.policy = policy
        self.notes: list[list[str]] = []

    @hookimpl
    def prepare_step(self, context: StepContext) -> None:
        self.notes.append(sandbox.apply(context, self.policy))

    @hookimpl
    def run_event(self, event: Event) -> None:
        if event.type == "run.finished":
            sandbox.release(event.run_id)


def write_jobs(root: Path, jobs: dict[str, dict[str, Any]]) -> None:
    for job_id, config in jobs.items():
        folder = root / job_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps(config))
        folder.chmod(0o755)
    root.chmod(0o755)


@contextlib.asynccontextmanager
async def service_with(
    root: Path, jobs: dict[str, dict[str, Any]], policy: StepPolicy, **more: Any
) -> AsyncIterator[RunService]:
    write_jobs(root / "jobs", jobs)
    settings = Settings(
        sources=(JobSource(name="local-fs", path=str(root / "jobs")),),
        data_dir=str(root / "data"),
        watch=False,
        kill_grace=1.0,
        **more,
    )
    pm = make_plugin_manager(load_entrypoints=False, extra=[PolicyPlugin(policy)])
    async with RunService(settings, JobRegistry(settings, pm), pm) as service:
        yield service


async def run_job(service: RunService, job_id: str, timeout: float = 60) -> tuple[Run, str]:
    """Run `job_id` to its end: the run and its log, one line per line."""
    run = await service.create_run(job_id, {})
    finished = await service.wait_run(run.run_id, timeout=timeout)
    logs = await service.read_logs(run.run_id)
    return finished, "\n".join(line.message for line in logs)


ROOT = os.geteuid() == 0
