"""`/api/v1/events/runs`: the live Server-Sent Events stream of all runs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromQuery, HeaderParameter, QueryParameter

from flwd.api.deps import AppSettings, Feed, Runs, resume_point
from flwd.api.openapi import EventStreamOperation
from flwd.api.problems import problem_responses
from flwd.events.sse import SSEStream, sse_response


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
        since: Annotated[int | None, QueryParameter(ge=0)] = None,
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
