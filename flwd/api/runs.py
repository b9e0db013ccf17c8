"""`/api/v1/runs`: create, list, inspect, cancel and restart runs; their steps and logs."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from flwd.api.deps import (
    INT64_MAX,
    MAX_PAGE,
    AppSettings,
    Feed,
    Runs,
    paginated,
    parse_since,
    resume_id,
)
from flwd.api.openapi import EventStreamOperation, LogsOperation
from flwd.api.problems import problem_responses
from flwd.api.schemas import (
    TENANT_MAX,
    TENANT_PATTERN,
    CreateRun,
    LogList,
    RestartRun,
    RunList,
    StepList,
)
from flwd.events.sse import (
    RUN_FINISHED,
    RUN_OUTPUT,
    SSEStream,
    end_frame,
    log_bytes,
    log_frame,
    no_events,
    sse_response,
)
from flwd.models import Event, Run
from flwd.states import TERMINAL_RUN, RunStatus

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        max_length=255,
        description="Retrying a POST with the same key returns the original run.",
    ),
]
LastEventId = Annotated[
    str | None,
    HeaderParameter(name="Last-Event-ID", description="Resume after this event id."),
]
PAGE_HEADERS = [
    ResponseHeader(name=name, description=text, documentation_only=True)
    for name, text in (
        ("X-Total-Count", "Number of items matching the filters"),
        ("Link", "RFC 8288 links to the first, prev, next and last pages"),
    )
]


def _created(run: Run) -> Response[Run]:
    return Response(run, status_code=201, headers={"Location": f"/api/v1/runs/{run.run_id}"})


class RunController(Controller):
    path = "/runs"
    tags = ["runs"]

    @post(
        operation_id="createRun",
        status_code=201,
        responses=problem_responses(400, 404, 409, 413, 415, 422, 429, 500),
    )
    async def create_run(
        self, runs: Runs, data: JSONBody[CreateRun], idempotency_key: IdempotencyKey = None
    ) -> Response[Run]:
        """Start a run. With `"async": false` the response waits for the run to end and
        carries its `result`; otherwise it returns at once with status `pending`."""
        run = await runs.create_run(
            data.job_id, data.args, tenant=data.tenant, idempotency_key=idempotency_key
        )
        return _created(run if data.async_ else await runs.wait_run(run.run_id))

    @get(
        operation_id="listRuns",
        response_headers=PAGE_HEADERS,
        responses=problem_responses(400, 500),
    )
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        job_id: FromQuery[str | None] = None,
        status: FromQuery[RunStatus | None] = None,
        tenant: Annotated[
            str | None, QueryParameter(max_length=TENANT_MAX, pattern=TENANT_PATTERN)
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=INT64_MAX)] = 0,
    ) -> Response[RunList]:
        """Runs, newest first, with the `total` matching the filters."""
        items, total = await runs.list_runs(
            job_id=job_id, status=status, tenant=tenant, limit=limit, offset=offset
        )
        body = RunList(runs=items, total=total)
        return paginated(request, body, total=total, limit=limit, offset=offset)

    @get("/{run_id:str}", operation_id="getRun", responses=problem_responses(400, 404, 500))
    async def get_run(self, runs: Runs, run_id: FromPath[str]) -> Run:
        """One run with its (secret-masked) `args` and its `result` once finished."""
        return await runs.get_run(run_id)

    @post(
        "/{run_id:str}/cancel",
        operation_id="cancelRun",
        status_code=200,
        responses=problem_responses(400, 404, 409, 500),
    )
    async def cancel_run(self, runs: Runs, run_id: FromPath[str]) -> Run:
        """Cancel a pending or running run; answers once its processes are gone."""
        return await runs.cancel_run(run_id)

    @post(
        "/{run_id:str}/restart",
        operation_id="restartRun",
        status_code=201,
        responses=problem_responses(400, 404, 409, 413, 415, 422, 429, 500),
    )
    async def restart_run(
        self,
        runs: Runs,
        run_id: FromPath[str],
        data: JSONBody[RestartRun | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Run]:
        """A new run of the same job with the same arguments (secret ones, never stored
        readable, must be given again in `args`)."""
        body = data or RestartRun()
        run = await runs.restart_run(run_id, args=body.args, idempotency_key=idempotency_key)
        return _created(run if body.async_ else await runs.wait_run(run.run_id))

    @get(
        "/{run_id:str}/steps", operation_id="listSteps", responses=problem_responses(400, 404, 500)
    )
    async def list_steps(self, runs: Runs, run_id: FromPath[str]) -> StepList:
        """The run's steps and their states."""
        await runs.get_run(run_id)
        return StepList(steps=await runs.list_steps(run_id))

    @get(
        "/{run_id:str}/logs",
        operation_id="getRunLogs",
        responses={
            200: ResponseSpec(LogList, description="Log lines (JSON), or SSE with follow=true"),
            **problem_responses(400, 404, 500),
        },
        operation_class=LogsOperation,
    )
    async def logs(
        self,
        runs: Runs,
        feed: Feed,
        settings: AppSettings,
        run_id: FromPath[str],
        follow: FromQuery[bool] = False,
        since: Annotated[
            str | None,
            QueryParameter(description="Event id (integer) or RFC 3339 timestamp; exclusive"),
        ] = None,
        limit: Annotated[int | None, QueryParameter(ge=1, le=INT64_MAX)] = None,
        last_event_id: LastEventId = None,
    ) -> Response[LogList] | SSEStream:
        """The run's output lines. `follow=true` streams them as Server-Sent Events
        (`event: log`) and ends with `event: end` once the run is terminal."""
        run = await runs.get_run(run_id)
        if not follow:
            since_id, since_time = parse_since(since)
            lines = await runs.read_logs(
                run_id, since_id=since_id, since_time=since_time, limit=limit
            )
            return Response(LogList(logs=lines))
        after = resume_id(last_event_id, since)
        if run.status in TERMINAL_RUN:
            # Nothing more will happen: replay what is stored and end.
            lines = await runs.read_logs(run_id, since_id=after)
            frames = [log_frame(line) for line in lines]
            frames.append(end_frame(run_id, run.status, None))
            return sse_response(no_events(), heartbeat=settings.heartbeat, prelude=frames)
        batches = feed.follow(since=after, run_id=run_id, until_terminal=True)
        return sse_response(
            batches,
            heartbeat=settings.heartbeat,
            render=_render_log,
            stop=lambda event: event.type == RUN_FINISHED,
        )

    @get(
        "/{run_id:str}/events",
        operation_id="streamRunEvents",
        media_type="text/event-stream",
        operation_class=EventStreamOperation,
        responses=problem_responses(400, 404, 500),
    )
    async def events(
        self,
        runs: Runs,
        feed: Feed,
        settings: AppSettings,
        run_id: FromPath[str],
        since: Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)] = None,
        last_event_id: LastEventId = None,
    ) -> SSEStream:
        """Server-Sent Events of one run from its first event (or after `Last-Event-ID` /
        `since`); the stream ends after the run's `run.finished` event."""
        await runs.get_run(run_id)
        after = resume_id(last_event_id, None if since is None else str(since))
        batches = feed.follow(since=after, run_id=run_id, until_terminal=True)
        return sse_response(
            batches, heartbeat=settings.heartbeat, stop=lambda e: e.type == RUN_FINISHED
        )


def _render_log(event: Event) -> Any:
    if event.type == RUN_OUTPUT:
        return log_bytes(event)
    if event.type == RUN_FINISHED:
        return end_frame(event.run_id, str(event.data.get("status", "")), event.id)
    return None
