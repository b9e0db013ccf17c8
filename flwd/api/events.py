"""`/api/v1/events/runs`: the live Server-Sent Events stream of all runs;
`/api/v1/events/jobs`: live `jobs.changed` events when the job catalogue changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from sse_starlette import ServerSentEvent

from flwd.api.deps import INT64_MAX, AppSettings, Feed, Registry, Runs, resume_point
from flwd.api.openapi import EventStreamOperation
from flwd.api.problems import problem_responses
from flwd.api.schemas import JobsChanged
from flwd.api.services import CatalogView, JobRegistryView
from flwd.api.sse import SSEStream, sse_response
from flwd.models import Event, utcnow

JOBS_CHANGED = "jobs.changed"
_encode = msgspec.json.Encoder().encode


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @get(
        "/runs",
        operation_id="streamEvents",
        media_type="text/event-stream",
        operation_class=EventStreamOperation,
        responses=problem_responses(400, 404, 410, 500),
    )
    async def run_events(
        self,
        runs: Runs,
        feed: Feed,
        settings: AppSettings,
        run_id: FromQuery[str | None] = None,
        job_id: FromQuery[str | None] = None,
        since: Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)] = None,
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> SSEStream:
        """Every run event as it happens; never ends by itself. Unfiltered it starts live;
        with `run_id` it starts at that run's first event; `Last-Event-ID`/`since` resume."""
        if run_id is not None:
            await runs.get_run(run_id)
        after = await resume_point(
            runs,
            last_event_id,
            None if since is None else str(since),
            run_id=run_id,
            job_id=job_id,
        )
        cut = asyncio.Event()
        batches = feed.follow(since=after, run_id=run_id, job_id=job_id, on_overflow=cut.set)
        return sse_response(
            batches, heartbeat=settings.heartbeat, send_timeout=settings.send_timeout, cut=cut
        )

    @get(
        "/jobs",
        operation_id="streamJobEvents",
        media_type="text/event-stream",
        operation_class=EventStreamOperation,
        responses=problem_responses(500),
    )
    async def job_events(self, registry: Registry, settings: AppSettings) -> SSEStream:
        """`jobs.changed` each time the job catalogue changes (a job folder added, edited
        or removed, picked up by hot reload); never ends by itself. Live only: events have
        no id and are not replayed, so a client that (re)connects reads `GET /jobs` first."""
        # the catalogue the stream compares with is the one current when it is opened
        return sse_response(
            catalog_changes(registry, registry.catalog),
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
    registry: JobRegistryView, seen: CatalogView
) -> AsyncIterator[list[Event]]:
    """A `jobs.changed` event (in a batch of one) per catalogue swap that changed
    something, compared with the catalogue this stream last reported on (`seen` first)."""
    while True:
        current = await registry.wait_for_change(seen.version)
        change = catalog_diff(seen, current)
        seen = current
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


def _jobs_changed_frame(event: Event) -> ServerSentEvent:
    # no `id:`: these events are not journalled, so there is nothing to resume from
    return ServerSentEvent(
        data=_encode({"type": JOBS_CHANGED, **event.data}).decode(), event=JOBS_CHANGED, sep="\n"
    )
