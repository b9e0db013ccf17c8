"""In-memory stand-ins for the job registry and run service, for unit tests of the HTTP
layer (the e2e tests drive the real ones). They honour the protocols in
`flwd.api.services`, including the event replay-then-live contract of `follow`."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pluggy

from flwd import errors
from flwd.api.services import ApiServices
from flwd.models import (
    Artifact,
    ContainmentInfo,
    Event,
    InvalidJob,
    JobSpec,
    LogLine,
    Result,
    Run,
    Step,
)
from flwd.settings import Settings
from flwd.states import TERMINAL_RUN, RunStatus


def job(job_id: str, **fields: Any) -> JobSpec:
    namespace, _, name = job_id.rpartition("/")
    return JobSpec(
        id=job_id, name=name, namespace=namespace, source="local-fs", path=job_id, **fields
    )


class FakeCatalog:
    def __init__(self, jobs: list[JobSpec], invalid: list[InvalidJob] | None = None) -> None:
        self.jobs = {j.id: j for j in jobs}
        self.invalid = tuple(invalid or ())

    def get(self, job_id: str) -> JobSpec:
        for bad in self.invalid:
            if bad.id == job_id:
                raise errors.JobNotRunnable(job_id, [d.reason for d in bad.diagnostics])
        if job_id not in self.jobs:
            raise errors.JobNotFound(job_id)
        return self.jobs[job_id]

    def list(self, *, namespace: str | None = None, source: str | None = None) -> list[JobSpec]:
        return [
            j
            for j in self.jobs.values()
            if (namespace is None or j.namespace == namespace)
            and (source is None or j.source == source)
        ]


class FakeRegistry:
    def __init__(self, catalog: FakeCatalog) -> None:
        self.catalog = catalog
        self.watching = True

    def source_info(self) -> list[dict[str, Any]]:
        return [{"name": "local-fs", "type": "fs", "path": "/srv/jobs"}]


class FakeRunService:
    """Runs stay `pending` until a test calls `finish()`; events are kept in memory."""

    def __init__(self, registry: FakeRegistry, artifact_dir: pathlib.Path | None = None) -> None:
        self.registry = registry
        self.runs: dict[str, Run] = {}
        self.events: list[Event] = []
        self.keys: dict[str, tuple[Any, str]] = {}
        self.artifacts: dict[str, tuple[Artifact, pathlib.Path]] = {}
        self.queue_full = False
        self.is_healthy = True
        self.fail_with: BaseException | None = None
        self._changed = asyncio.Condition()
        self.artifact_dir = artifact_dir

    async def emit(self, run: Run, type_: str, **data: Any) -> Event:
        async with self._changed:
            event = Event(
                id=len(self.events) + 1,
                type=type_,
                run_id=run.run_id,
                job_id=run.job_id,
                timestamp=datetime.now(UTC),
                data=data,
            )
            self.events.append(event)
            self._changed.notify_all()
        return event

    async def create_run(
        self,
        job_id: str,
        args: dict[str, Any] | None,
        *,
        tenant: str = "default",
        idempotency_key: str | None = None,
    ) -> Run:
        if self.fail_with is not None:
            raise self.fail_with
        spec = self.registry.catalog.get(job_id)
        request = (job_id, args, tenant)
        if idempotency_key in self.keys:
            seen, run_id = self.keys[idempotency_key]
            if seen != request:
                raise errors.IdempotencyKeyReused(idempotency_key)
            return self.runs[run_id]
        missing = [r for r in spec.args.get("required", []) if r not in (args or {})]
        if missing:
            raise errors.ArgumentsInvalid(
                "arguments are invalid",
                [errors.FieldError(path=f"/{m}", message=f"'{m}' is required") for m in missing],
            )
        if self.queue_full:
            raise errors.QueueFull(3, 7)
        run = Run(
            run_id=f"run_{len(self.runs) + 1:04d}",
            job_id=job_id,
            status=RunStatus.PENDING,
            created_at=datetime.now(UTC),
            tenant=tenant,
            args=args or {},
        )
        self.runs[run.run_id] = run
        if idempotency_key:
            self.keys[idempotency_key] = (request, run.run_id)
        await self.emit(run, "run.created")
        return run

    async def output(self, run_id: str, message: str) -> Event:
        run = self.runs[run_id]
        return await self.emit(
            run, "run.output", level="info", message=message, step_id="main", stream="stdout"
        )

    async def finish(self, run_id: str, status: RunStatus = RunStatus.SUCCESS) -> Run:
        run = msgspec.structs.replace(
            self.runs[run_id],
            status=status,
            finished_at=datetime.now(UTC),
            result=Result(value={"ok": True}),
        )
        self.runs[run_id] = run
        await self.emit(run, "run.finished", status=str(status), reason=None)
        return run

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        if self.runs[run_id].status not in TERMINAL_RUN:
            await self.finish(run_id)
        return self.runs[run_id]

    async def cancel_run(self, run_id: str) -> Run:
        run = await self.get_run(run_id)
        if run.status in TERMINAL_RUN:
            raise errors.RunNotCancellable(run_id, run.status)
        return await self.finish(run_id, RunStatus.CANCELLED)

    async def restart_run(
        self,
        run_id: str,
        *,
        args: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        old = await self.get_run(run_id)
        return await self.create_run(old.job_id, args if args is not None else old.args)

    async def get_run(self, run_id: str) -> Run:
        if run_id not in self.runs:
            raise errors.RunNotFound(run_id)
        return self.runs[run_id]

    async def list_runs(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        tenant: str | None = None,
        q: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Run], int]:
        runs = [
            r
            for r in reversed(self.runs.values())
            if (job_id is None or r.job_id == job_id)
            and (status is None or r.status == status)
            and (q is None or q.lower() in r.job_id.lower())
            and (created_from is None or r.created_at >= created_from)
            and (created_to is None or r.created_at < created_to)
        ]
        return runs[offset : offset + limit], len(runs)

    async def list_steps(self, run_id: str) -> list[Step]:
        run = await self.get_run(run_id)
        return [Step(run_id=run_id, step_id="main", status=run.status)]  # type: ignore[arg-type]

    async def list_artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Artifact], int]:
        items = [a for a, _ in self.artifacts.values() if run_id is None or a.run_id == run_id]
        return items[offset : offset + limit], len(items)

    async def get_artifact(self, artifact_id: str) -> tuple[Artifact, pathlib.Path]:
        if artifact_id not in self.artifacts:
            raise errors.ArtifactNotFound(artifact_id)
        return self.artifacts[artifact_id]

    async def read_logs(
        self,
        run_id: str,
        *,
        since_id: int | None = None,
        since_time: datetime | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogLine]:
        lines = [
            LogLine(
                id=e.id,
                timestamp=e.timestamp,
                level=e.data["level"],
                message=e.data["message"],
                step_id=e.data.get("step_id"),
            )
            for e in self.events
            if e.run_id == run_id
            and e.type == "run.output"
            and (since_id is None or e.id > since_id)
            and (since_time is None or e.timestamp > since_time)
        ]
        if tail is not None:
            lines = lines[-tail:]
        return lines[:limit] if limit else lines

    async def count_logs(self, run_id: str) -> int:
        return len(await self.read_logs(run_id))

    async def log_position(self, run_id: str, moment: datetime) -> int:
        later = [e.id for e in self.events if e.run_id == run_id and e.timestamp > moment]
        return later[0] - 1 if later else len(self.events)

    async def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
    ) -> AsyncIterator[Event]:
        position = since if since is not None else (0 if run_id else len(self.events))
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda seen=position: len(self.events) > seen)
                batch = self.events[position:]
            for event in batch:
                position = event.id
                if (run_id and event.run_id != run_id) or (job_id and event.job_id != job_id):
                    continue
                yield event
                if until_terminal and event.type == "run.finished":
                    return

    async def healthy(self) -> bool:
        return self.is_healthy

    async def check_resume(
        self, since: int | None, *, run_id: str | None = None, job_id: str | None = None
    ) -> None:
        """Nothing is ever pruned here (retention is tested against the real engine)."""

    def containment_info(self) -> ContainmentInfo:
        return ContainmentInfo(mode="subreaper", guarantee="the fake's")


def fake_services_factory(runs: FakeRunService) -> Any:
    @contextlib.asynccontextmanager
    async def factory(settings: Settings, pm: pluggy.PluginManager) -> AsyncIterator[ApiServices]:
        yield ApiServices(registry=runs.registry, runs=runs)

    return factory
