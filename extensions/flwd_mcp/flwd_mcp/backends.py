"""What the MCP handlers need from flwd, and its two implementations.

`Flwd` is the small interface the tools and resources are written against, once for both
transports:

- `EngineFlwd` (streamable HTTP inside `flwd serve`) calls the server's own registry and
  run service in-process, on behalf of the request's caller: every job and run it returns
  or touches is checked with `permission_allowed` and the caller's confinement (tenant,
  job patterns), as the REST API does;
- `ClientFlwd` (`flwd mcp` over stdio) calls a running server through the public
  `FlwdClient`, with the caller's bearer token: the server applies the same checks.

Both answer with the same Structs (`JobDetail`, `Run`, `RunDetail`, `LogLine`, ...) and
raise the same domain errors (`flwd.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pluggy

from flwd import API_PREFIX
from flwd.access import CANCEL_RUN, RESTART_RUN, RUN_JOB, VIEW_JOBS, VIEW_RUNS, Actor, Resource
from flwd.client import FlwdClient
from flwd.errors import JobNotFound, PermissionDenied, RunNotFound
from flwd.events.bus import SlowConsumer
from flwd.jobs.views import JobDetail
from flwd.models import Artifact, Event, LogLine, Run, RunDetail, RunList
from flwd.states import RunStatus

#: log lines a tool result and a failure quote
LOG_TAIL = 20

OnEvent = Callable[[Event], Awaitable[None]]


class Flwd(Protocol):
    """flwd as one MCP caller may use it."""

    def artifact_url(self, artifact: Artifact) -> str:
        """Where the caller downloads an artifact."""

    async def jobs(self) -> list[JobDetail]:
        """The runnable jobs the caller may see and run, sorted by id."""

    async def job(self, job_id: str) -> JobDetail:
        """One of `jobs()`; `JobNotFound` otherwise."""

    async def start(self, job_id: str, args: dict[str, Any]) -> Run:
        """Start a run (`ArgumentsInvalid` names every failing field)."""

    def events(self, run_id: str) -> AsyncIterator[Event]:
        """The run's events from its first, ending after `run.finished`."""

    async def wait(self, run_id: str, on_event: OnEvent | None = None) -> Run:
        """The run once it has ended; `on_event` is given each of its events meanwhile."""

    async def run(self, run_id: str) -> RunDetail:
        """A run the caller may see (`RunNotFound` otherwise) with its steps."""

    async def runs(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> RunList:
        """A page of the runs the caller may see, newest first."""

    async def logs(
        self,
        run_id: str,
        *,
        tail: int | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[LogLine]:
        """Stored log lines: the last `tail`, or `limit` after event id `since`."""

    async def artifacts(self, run_id: str) -> list[Artifact]:
        """The run's artifacts (at most 100)."""

    async def cancel(self, run_id: str) -> Run:
        """Cancel a run; returns once it is terminal."""

    async def restart(self, run_id: str, args: dict[str, Any] | None) -> Run:
        """A new run of the same job with the same (non-secret) arguments, `args` over them."""


# -- in-process -------------------------------------------------------------------------


class EngineFlwd:
    """`Flwd` over the server's own services, for one caller (`actor`, None: anonymous).

    `runs` is the server's run service and `registry` its job registry (the objects the
    app's lifespan owns; see `flwd_mcp.http.services_of`)."""

    def __init__(self, runs: Any, registry: Any, pm: pluggy.PluginManager, actor: Actor | None):
        self._runs = runs
        self._registry = registry
        self._pm = pm
        self.actor = actor

    def _allowed(self, action: str, resource: Resource) -> bool:
        # no answer at all (no access plugin, not even the built-in default): allowed
        answer = self._pm.hook.permission_allowed(
            actor=self.actor, action=action, resource=resource
        )
        return answer is not False

    @property
    def tenant(self) -> str:
        """The tenant the caller's runs belong to."""
        return self.actor.tenant if self.actor is not None and self.actor.tenant else "default"

    def _sees_job(self, job_id: str) -> bool:
        return self.actor is None or self.actor.sees_job(job_id)

    def _may_run(self, job_id: str) -> bool:
        return (
            self._sees_job(job_id)
            and self._allowed(VIEW_JOBS, Resource(kind="job", job_id=job_id))
            and self._allowed(RUN_JOB, Resource(kind="job", job_id=job_id, tenant=self.tenant))
        )

    def artifact_url(self, artifact: Artifact) -> str:
        return f"{API_PREFIX}/artifacts/{artifact.id}"

    async def jobs(self) -> list[JobDetail]:
        catalog = self._registry.catalog
        return [JobDetail.of(job) for job in catalog.list() if self._may_run(job.id)]

    async def job(self, job_id: str) -> JobDetail:
        if not self._may_run(job_id):
            raise JobNotFound(job_id)
        return JobDetail.of(self._registry.catalog.get(job_id))

    async def start(self, job_id: str, args: dict[str, Any]) -> Run:
        await self.job(job_id)
        run: Run = await self._runs.create_run(job_id, args, tenant=self.tenant)
        return run

    async def events(self, run_id: str) -> AsyncIterator[Event]:
        await self._visible(run_id)
        async for event in self._runs.follow(since=None, run_id=run_id, until_terminal=True):
            yield event

    async def wait(self, run_id: str, on_event: OnEvent | None = None) -> Run:
        if on_event is not None:
            try:
                async for event in self.events(run_id):
                    await on_event(event)
            except SlowConsumer:  # too far behind a chatty run: no more progress, same end
                pass
        else:
            await self._visible(run_id)
        # the run's final state as its run.finished stored it, without reading it back
        run: Run = await self._runs.wait_run(run_id)
        return run

    def _sees_run(self, run: Run) -> bool:
        if self.actor is not None and not (
            self.actor.sees_job(run.job_id) and self.actor.sees_tenant(run.tenant)
        ):
            return False
        return self._allowed(VIEW_RUNS, _run_resource(run))

    async def _visible(self, run_id: str) -> Run:
        run: Run = await self._runs.get_run(run_id)
        if not self._sees_run(run):
            raise RunNotFound(run_id)
        return run

    async def run(self, run_id: str) -> RunDetail:
        run = await self._visible(run_id)
        return RunDetail.of(run, await self._runs.list_steps(run_id))

    async def runs(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> RunList:
        actor = self.actor
        # the caller's confinement is applied in the query, as the API's lists do, so
        # the page and its total count only the runs the caller may see
        items, total = await self._runs.list_runs(
            job_id=job_id,
            status=status,
            limit=limit,
            offset=offset,
            confined_tenant=actor.tenant if actor is not None else None,
            job_patterns=actor.job_patterns if actor is not None else None,
        )
        # and a plugin's `permission_allowed` may still refuse single runs
        return RunList(runs=[r for r in items if self._sees_run(r)], total=total)

    async def logs(
        self,
        run_id: str,
        *,
        tail: int | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[LogLine]:
        await self._visible(run_id)
        lines: list[LogLine] = await self._runs.read_logs(
            run_id, since_id=since, limit=limit, tail=tail
        )
        return lines

    async def artifacts(self, run_id: str) -> list[Artifact]:
        await self._visible(run_id)
        items, _ = await self._runs.list_artifacts(run_id=run_id, limit=100)
        return list(items)

    async def cancel(self, run_id: str) -> Run:
        run = await self._visible(run_id)
        if not self._allowed(CANCEL_RUN, _run_resource(run)):
            raise PermissionDenied(f"not allowed to cancel the run '{run_id}'")
        cancelled: Run = await self._runs.cancel_run(run_id)
        return cancelled

    async def restart(self, run_id: str, args: dict[str, Any] | None) -> Run:
        run = await self._visible(run_id)
        if not self._allowed(RESTART_RUN, _run_resource(run)) or not self._may_run(run.job_id):
            raise PermissionDenied(f"not allowed to restart the run '{run_id}'")
        restarted: Run = await self._runs.restart_run(run_id, args=args)
        return restarted


def _run_resource(run: Run) -> Resource:
    return Resource(kind="run", run_id=run.run_id, job_id=run.job_id, tenant=run.tenant)


# -- over HTTP --------------------------------------------------------------------------


class ClientFlwd:
    """`Flwd` through `FlwdClient`: the server decides what the client's token may do."""

    def __init__(self, client: FlwdClient) -> None:
        self._client = client
        self._jobs: list[JobDetail] | None = None
        #: whether job details are remembered: only while catalogue changes are followed
        self.remember_jobs = True

    def forget_jobs(self) -> None:
        """Drop the remembered job details (the catalogue changed)."""
        self._jobs = None

    def artifact_url(self, artifact: Artifact) -> str:
        return f"{self._client.base_url}/artifacts/{artifact.id}"

    async def jobs(self) -> list[JobDetail]:
        # one request per job: remembered until the catalogue changes (`forget_jobs`)
        if self._jobs is not None:
            return list(self._jobs)
        listed = await self._client.list_jobs()
        jobs = [await self._client.get_job(job.id) for job in listed.jobs]
        if self.remember_jobs:
            self._jobs = jobs
        return jobs

    async def job(self, job_id: str) -> JobDetail:
        return await self._client.get_job(job_id)

    async def start(self, job_id: str, args: dict[str, Any]) -> Run:
        return await self._client.create_run(job_id, args)

    async def events(self, run_id: str) -> AsyncIterator[Event]:
        async for event in self._client.follow_events(run_id):
            yield event

    async def wait(self, run_id: str, on_event: OnEvent | None = None) -> Run:
        async for event in self._client.follow_events(run_id):
            if on_event is not None:
                await on_event(event)
        return await self._client.get_run(run_id)

    async def run(self, run_id: str) -> RunDetail:
        return await self._client.get_run(run_id)

    async def runs(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> RunList:
        return await self._client.list_runs(
            job_id=job_id,
            status=None if status is None else status.value,
            limit=limit,
            offset=offset,
        )

    async def logs(
        self,
        run_id: str,
        *,
        tail: int | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[LogLine]:
        return await self._client.logs(run_id, tail=tail, since=since, limit=limit)

    async def artifacts(self, run_id: str) -> list[Artifact]:
        body = await self._client.list_artifacts(run_id=run_id, limit=100)
        return list(body.artifacts)

    async def cancel(self, run_id: str) -> Run:
        return await self._client.cancel_run(run_id)

    async def restart(self, run_id: str, args: dict[str, Any] | None) -> Run:
        return await self._client.restart_run(run_id, args)
