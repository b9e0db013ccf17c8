"""Where the run commands get their data: the local engine, or a server over HTTP.

Both backends expose the same small surface, so `flwd run`, `runs`, `logs`, `cancel` and
`artifacts` print the same thing whichever one they talk to.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import msgspec

from flwd.errors import FlwdError, StorageError
from flwd.models import Artifact, Event, LogLine, Run, Step
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings
from flwd.states import RunStatus

if TYPE_CHECKING:  # imported when a command runs, so `flwd --help` starts fast
    from flwd.client import FlwdClient
    from flwd.engine.service import RunService


class Backend(Protocol):
    async def job_schema(self, job_id: str) -> dict[str, Any]: ...
    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run: ...
    async def get_run(self, run_id: str) -> Run: ...
    async def steps(self, run_id: str) -> list[Step]: ...
    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> tuple[list[Run], int]: ...
    async def cancel_run(self, run_id: str) -> Run: ...
    async def logs(self, run_id: str) -> list[LogLine]: ...
    def events(self, run_id: str) -> AsyncIterator[Event]: ...
    async def list_artifacts(self, *, run_id: str | None, limit: int) -> list[Artifact]: ...
    async def download(self, artifact_id: str, dest: Path) -> Path: ...


class LocalBackend:
    """The engine in this process, on the data dir (needs no server)."""

    def __init__(self, service: RunService) -> None:
        self.service = service

    async def job_schema(self, job_id: str) -> dict[str, Any]:
        return self.service.registry.catalog.get(job_id).args

    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run:
        return await self.service.create_run(job_id, args)

    async def get_run(self, run_id: str) -> Run:
        return await self.service.get_run(run_id)

    async def steps(self, run_id: str) -> list[Step]:
        return await self.service.list_steps(run_id)

    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> tuple[list[Run], int]:
        return await self.service.list_runs(
            job_id=job_id, status=status, limit=limit, offset=offset
        )

    async def cancel_run(self, run_id: str) -> Run:
        return await self.service.cancel_run(run_id)

    async def logs(self, run_id: str) -> list[LogLine]:
        return await self.service.read_logs(run_id)

    def events(self, run_id: str) -> AsyncIterator[Event]:
        return self.service.follow(since=None, run_id=run_id, until_terminal=True)

    async def list_artifacts(self, *, run_id: str | None, limit: int) -> list[Artifact]:
        items, _ = await self.service.list_artifacts(run_id=run_id, limit=limit)
        return items

    async def download(self, artifact_id: str, dest: Path) -> Path:
        artifact, source = await self.service.get_artifact(artifact_id)
        target = dest / artifact.name if dest.is_dir() else dest
        shutil.copyfile(source, target)
        return target


class RemoteBackend:
    """A flwd server's HTTP API."""

    def __init__(self, client: FlwdClient) -> None:
        self.client = client

    async def job_schema(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self.client._request(
            "GET", f"/jobs/{quote(job_id, safe='/')}", dict, context={"job_id": job_id}
        )
        schema = job.get("args")
        return schema if isinstance(schema, dict) else {}

    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run:
        return await self.client.create_run(job_id, args)

    async def get_run(self, run_id: str) -> Run:
        return await self.client.get_run(run_id)

    async def steps(self, run_id: str) -> list[Step]:
        body: dict[str, Any] = await self.client._request(
            "GET", f"/runs/{quote(run_id)}", dict, context={"run_id": run_id}
        )
        return msgspec.convert(body.get("steps") or [], list[Step])

    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> tuple[list[Run], int]:
        return await self.client.list_runs(
            job_id=job_id, status=status.value if status else None, limit=limit, offset=offset
        )

    async def cancel_run(self, run_id: str) -> Run:
        return await self.client.cancel_run(run_id)

    async def logs(self, run_id: str) -> list[LogLine]:
        return await self.client.logs(run_id)

    def events(self, run_id: str) -> AsyncIterator[Event]:
        return self.client.follow_events(run_id)

    async def list_artifacts(self, *, run_id: str | None, limit: int) -> list[Artifact]:
        return await self.client.list_artifacts(run_id=run_id, limit=limit)

    async def download(self, artifact_id: str, dest: Path) -> Path:
        return await self.client.download_artifact(artifact_id, dest)


@contextlib.asynccontextmanager
async def open_backend(settings: Settings, *, execute: bool = False) -> AsyncIterator[Backend]:
    """A backend for one command. With `settings.server`, the HTTP API; otherwise the
    local data dir — owned (`execute`: runs jobs, needs the data dir lock) or read-only."""
    from flwd.client import FlwdClient
    from flwd.engine.service import RunService

    if settings.server:
        async with FlwdClient(settings.server) as client:
            yield RemoteBackend(client)
        return
    if execute:
        from flwd.jobs.registry import JobRegistry

        pm = make_plugin_manager()
        registry = JobRegistry(settings, pm)
        async with RunService(settings, registry, pm) as service:
            yield LocalBackend(service)
        return
    service = RunService(settings, None, make_plugin_manager(), readonly=True)
    try:
        await service.__aenter__()
    except StorageError:
        raise FlwdError(
            f"no runs yet: there is no flwd database in the data dir {settings.data_dir}"
        ) from None
    try:
        yield LocalBackend(service)
    finally:
        await service.__aexit__(None, None, None)
