"""`/api/v1/events/runs`: the live Server-Sent Events stream of all runs;
`/api/v1/events/jobs`: live `jobs.changed` events when the job catalogue changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from sse_starlette import ServerSentEvent

from flwd.access import VIEW_EVENTS, VIEW_RUNS, Actor
from flwd.api.access import actor_of, route_action, visible_run
from flwd.api.deps import INT64_MAX, AppSettings, Feed, Registry, Runs, resume_point
from flwd.api.openapi import EventStreamOperation
from flwd.api.problems import problem_responses
from flwd.api.schemas import JobsChanged
from flwd.api.services import CatalogView, JobRegistryView, RunServiceView
from flwd.api.sse import SSEStream, sse_response
from flwd.errors import RunNotFound
from flwd.models import Event, utcnow

JOBS_CHANGED = "jobs.changed"
_encode = msgspec.json.Encoder().encode


class EventController(Controller):
    path = "/events"
    tags = ["events"]
    opt = route_action(VIEW_EVENTS)

    @get(
        "/runs",
        operation_id="streamEvents",
        media_type="text/event-stream",
        operation_class=EventStreamOperation,
        responses=problem_responses(400, 401, 403, 404, 410, 500),
    )
    async def run_events(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        feed: Feed,
        settings: AppSettings,
        run_id: FromQuery[str | None] = None,
        job_id: FromQuery[str | None] = None,
        since: Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)] = None,
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> SSEStream:
        """Every run event as it happens; never ends by itself. Unfiltered it starts live;
        with `run_id` it starts at that run's first event; `Last-Event-ID`/`since` resume.
        A caller confined to a tenant or job patterns gets only the events of runs it
        sees."""
        if run_id is not None:
            visible_run(request, await runs.get_run(run_id), VIEW_RUNS)
        after = await resume_point(
            runs,
            last_event_id,
            None if since is None else str(since),
            run_id=run_id,
            job_id=job_id,
        )
        cut = asyncio.Event()
        batches = feed.follow(since=after, run_id=run_id, job_id=job_id, on_overflow=cut.set)
        actor = actor_of(request)
        if actor is not None and (actor.tenant is not None or actor.job_patterns is not None):
            batches = confined_batches(batches, actor, runs)
        return sse_response(
            batches, heartbeat=settings.heartbeat, send_timeout=settings.send_timeout, cut=cut
        )

    @get(
        "/jobs",
        operation_id="streamJobEvents",
        media_type="text/event-stream",
        operation_class=EventStreamOperation,
        responses=problem_responses(401, 403, 500),
    )
    async def job_events(
        self, request: Request[Any, Any, Any], registry: Registry, settings: AppSettings
    ) -> SSEStream:
        """`jobs.changed` each time the job catalogue changes (a job folder added, edited
        or removed, picked up by hot reload); never ends by itself. Live only: events have
        no id and are not replayed, so a client that (re)connects reads `GET /jobs` first."""
        # the catalogue the stream compares with is the one current when it is opened
        return sse_response(
            catalog_changes(registry, registry.catalog, actor_of(request)),
            heartbeat=settings.heartbeat,
            send_timeout=settings.send_timeout,
            render=_jobs_changed_frame,
        )


def catalog_diff(before: CatalogView, after: CatalogView) -> JobsChanged | None:
    """What changed from one catalogue to the next; None when no job or invalid folder
    did."""
    old = {job.id: job for job in before.list()}
    new = {job.id: job for job in after.list()}
    old_invalid = sorted({bad.id for bad in before.invalid})
    new_invalid = sorted({bad.id for bad in after.invalid})
    change = JobsChanged(
        timestamp=utcnow(),
        added=sorted(new.keys() - old.keys()),
        changed=sorted(i for i in new.keys() & old.keys() if new[i] != old[i]),
        removed=sorted(old.keys() - new.keys()),
        invalid=new_invalid,
    )
    if change.added or change.changed or change.removed or old_invalid != new_invalid:
        return change
    return None


async def catalog_changes(
    registry: JobRegistryView, seen: CatalogView, actor: Actor | None = None
) -> AsyncIterator[list[Event]]:
    """A `jobs.changed` event (in a batch of one) per catalogue swap that changed
    something, compared with the catalogue this stream last reported on (`seen` first);
    for an actor confined to job patterns, only about the jobs it sees."""
    while True:
        current = await registry.wait_for_change(seen.version)
        change = catalog_diff(seen, current)
        seen = current
        if change is not None and actor is not None and actor.job_patterns is not None:
            change = _seen_by(change, actor)
        if change is not None:
            data = msgspec.to_builtins(change)
            yield [
                Event(
                    id=0,
                    type=JOBS_CHANGED,
                    run_id="",
                    job_id="",
                    timestamp=change.timestamp,
                    data=data,
                )
            ]


def _seen_by(change: JobsChanged, actor: Actor) -> JobsChanged | None:
    """`change` reduced to the jobs `actor` sees (None when nothing is left)."""
    seen = [[i for i in ids if actor.sees_job(i)] for ids in (change.added, change.changed)]
    removed = [i for i in change.removed if actor.sees_job(i)]
    invalid = [i for i in change.invalid if actor.sees_job(i)]
    if not (seen[0] or seen[1] or removed or invalid):
        return None
    return JobsChanged(
        timestamp=change.timestamp,
        added=seen[0],
        changed=seen[1],
        removed=removed,
        invalid=invalid,
    )


#: run ids whose tenant a confined stream remembers before it starts over
_TENANTS_KEPT = 10_000


async def confined_batches(
    batches: AsyncIterator[list[Event]], actor: Actor, runs: RunServiceView
) -> AsyncIterator[list[Event]]:
    """`batches` without the events of runs outside the actor's confinement. A run's
    tenant is read from its `run.created` event, or once from the store, and remembered."""
    tenants: dict[str, str] = {}
    try:
        async for batch in batches:
            kept = []
            for event in batch:
                if not actor.sees_job(event.job_id):
                    continue
                if actor.tenant is not None:
                    tenant = tenants.get(event.run_id)
                    if tenant is None:
                        tenant = await _tenant_of(event, runs)
                        if len(tenants) >= _TENANTS_KEPT:
                            tenants.clear()
                        tenants[event.run_id] = tenant
                    if tenant != actor.tenant:
                        continue
                kept.append(event)
            if kept:
                yield kept
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _tenant_of(event: Event, runs: RunServiceView) -> str:
    tenant = event.data.get("tenant") if event.type == "run.created" else None
    if isinstance(tenant, str):
        return tenant
    try:
        return (await runs.get_run(event.run_id)).tenant
    except RunNotFound:
        return ""  # pruned meanwhile: nobody confined sees it


def _jobs_changed_frame(event: Event) -> ServerSentEvent:
    # no `id:`: these events are not journalled, so there is nothing to resume from
    return ServerSentEvent(
        data=_encode({"type": JOBS_CHANGED, **event.data}).decode(), event=JOBS_CHANGED, sep="\n"
    )
