"""Where the commands get their data: the local engine, or a server over HTTP.

Both sources expose the same small surface and return the same Structs, so every command
prints the same thing whichever one it talks to. Which one: `--server` / `FLWD_SERVER`
when given, else the server running on the data dir (found through its `server.json`),
else the data dir itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from flwd.errors import FlwdError, StorageError
from flwd.jobs.views import JobDetail
from flwd.models import ArtifactList, Event, LogLine, Run, RunDetail, RunList, Step
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings
from flwd.states import RunStatus

if TYPE_CHECKING:  # imported when a command runs, so `flwd --help` starts fast
    from flwd.client import FlwdClient
    from flwd.engine.service import RunService


class RunSource(Protocol):
    """Where a command reads jobs and runs and starts them: `LocalSource` (the engine on
    the data dir) or `RemoteSource` (a server's HTTP API)."""

    async def get_job(self, job_id: str) -> JobDetail: ...
    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run: ...
    async def restart_run(self, run_id: str, args: dict[str, Any] | None) -> Run: ...
    async def get_run(self, run_id: str) -> RunDetail: ...
    async def steps(self, run_id: str) -> list[Step]: ...
    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> RunList: ...
    async def cancel_run(self, run_id: str) -> Run: ...
    async def logs(self, run_id: str) -> list[LogLine]: ...
    def events(self, run_id: str) -> AsyncIterator[Event]: ...
    async def list_artifacts(self, *, run_id: str | None, limit: int) -> ArtifactList: ...
    async def download(self, artifact_id: str, dest: str) -> Path: ...


class LocalSource:
    """The engine in this process, on the data dir (needs no server)."""

    def __init__(self, service: RunService) -> None:
        self.service = service

    async def get_job(self, job_id: str) -> JobDetail:
        if self.service.registry is None:
            raise FlwdError("reading jobs needs the job sources")  # never: run opens them
        return JobDetail.of(self.service.registry.catalog.get(job_id))

    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run:
        return await self.service.create_run(job_id, args)

    async def restart_run(self, run_id: str, args: dict[str, Any] | None) -> Run:
        return await self.service.restart_run(run_id, args=args)

    async def get_run(self, run_id: str) -> RunDetail:
        run = await self.service.get_run(run_id)
        return RunDetail.of(run, await self.service.list_steps(run_id))

    async def steps(self, run_id: str) -> list[Step]:
        return await self.service.list_steps(run_id)

    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> RunList:
        runs, total = await self.service.list_runs(
            job_id=job_id, status=status, limit=limit, offset=offset
        )
        return RunList(runs=runs, total=total)

    async def cancel_run(self, run_id: str) -> Run:
        return await self.service.cancel_run(run_id)

    async def logs(self, run_id: str) -> list[LogLine]:
        return await self.service.read_logs(run_id)

    def events(self, run_id: str) -> AsyncIterator[Event]:
        return self.service.follow(since=None, run_id=run_id, until_terminal=True)

    async def list_artifacts(self, *, run_id: str | None, limit: int) -> ArtifactList:
        items, total = await self.service.list_artifacts(run_id=run_id, limit=limit)
        return ArtifactList(artifacts=items, total=total)

    async def download(self, artifact_id: str, dest: str) -> Path:
        """Copy to `dest`: a file, or a directory (existing, or written with a trailing
        `/`) to put it in under its name — as `FlwdClient.download_artifact` does."""
        artifact, source = await self.service.get_artifact(artifact_id)
        path = Path(dest)
        as_dir = dest.endswith(("/", os.sep)) or path.is_dir()
        target = path / artifact.name if as_dir else path
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new file (0666 less the umask) replacing any old one, as a download does.
        tmp = target.parent / f".flwd-download-{secrets.token_hex(8)}"
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target


class RemoteSource:
    """A flwd server's HTTP API, through the public methods of `FlwdClient`."""

    def __init__(self, client: FlwdClient) -> None:
        self.client = client

    async def get_job(self, job_id: str) -> JobDetail:
        return await self.client.get_job(job_id)

    async def create_run(self, job_id: str, args: dict[str, Any]) -> Run:
        return await self.client.create_run(job_id, args)

    async def restart_run(self, run_id: str, args: dict[str, Any] | None) -> Run:
        return await self.client.restart_run(run_id, args)

    async def get_run(self, run_id: str) -> RunDetail:
        return await self.client.get_run(run_id)

    async def steps(self, run_id: str) -> list[Step]:
        return await self.client.list_steps(run_id)

    async def list_runs(
        self, *, job_id: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> RunList:
        return await self.client.list_runs(
            job_id=job_id, status=status.value if status else None, limit=limit, offset=offset
        )

    async def cancel_run(self, run_id: str) -> Run:
        return await self.client.cancel_run(run_id)

    async def logs(self, run_id: str) -> list[LogLine]:
        return await self.client.logs(run_id)

    def events(self, run_id: str) -> AsyncIterator[Event]:
        return self.client.follow_events(run_id)

    async def list_artifacts(self, *, run_id: str | None, limit: int) -> ArtifactList:
        return await self.client.list_artifacts(run_id=run_id, limit=limit)

    async def download(self, artifact_id: str, dest: str) -> Path:
        return await self.client.download_artifact(artifact_id, dest)


class ServerTarget(NamedTuple):
    """The server a command talks to: its root URL, the token to send, and the CA
    certificate (PEM file) to trust when it speaks HTTPS (None: the system's store)."""

    url: str
    token: str | None = None
    ca_cert: str | None = None


def server_url(settings: Settings, *, own_jobs: bool = False) -> ServerTarget | None:
    """The server a command talks to, with the token to send: `--server` / FLWD_SERVER
    when set, else the live server whose `server.json` is in the data dir, else None
    (local mode). `own_jobs` (the command was given `--jobs`) skips the search: those job
    folders are the command's own, not the server's. A local HTTPS server's own
    certificate (named in `server.json`) is trusted, unless FLWD_CA_CERT names another."""
    from flwd.client import find_local_server

    if settings.server:
        return ServerTarget(settings.server, None, settings.ca_cert)
    if own_jobs:
        return None
    info = find_local_server(settings.data_path)
    if info is None:
        return None
    return ServerTarget(info.url, info.read_token(), settings.ca_cert or info.tls_cert)


@contextlib.asynccontextmanager
async def open_client(server: ServerTarget) -> AsyncIterator[FlwdClient]:
    from flwd.client import FlwdClient

    if server.ca_cert and not os.access(server.ca_cert, os.R_OK):
        raise FlwdError(f"CA certificate {server.ca_cert} cannot be read (FLWD_CA_CERT)")
    async with FlwdClient(server.url, token=server.token, ca_cert=server.ca_cert) as client:
        yield client


@contextlib.asynccontextmanager
async def open_source(
    settings: Settings, *, execute: bool = False, server: ServerTarget | None = None
) -> AsyncIterator[RunSource]:
    """A source for one command: the HTTP API of `server` (see `server_url`), or the
    local data dir — owned (`execute`: runs jobs, needs the data dir lock) or read-only."""
    from flwd.engine.service import RunService

    if server is not None:
        async with open_client(server) as client:
            yield RemoteSource(client)
        return
    if execute:
        from flwd.jobs.registry import JobRegistry

        pm = make_plugin_manager()
        registry = JobRegistry(settings, pm)
        async with RunService(settings, registry, pm) as service:
            yield LocalSource(service)
        return
    service = RunService(settings, None, make_plugin_manager(), readonly=True)
    try:
        await service.__aenter__()
    except StorageError:
        raise FlwdError(
            f"no runs yet: there is no flwd database in the data dir {settings.data_dir}"
        ) from None
    try:
        yield LocalSource(service)
    finally:
        await service.__aexit__(None, None, None)
