"""`/api/v1/runs`: create, list, inspect, cancel and restart runs; their steps and logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from flwd import API_PREFIX
from flwd.api.deps import (
    INT64_MAX,
    LOG_PAGE,
    MAX_LOG_PAGE,
    MAX_PAGE,
    AppSettings,
    Feed,
    Runs,
    log_page,
    paginated,
    parse_since,
    parse_time,
    resume_id,
)
from flwd.api.openapi import EventStreamOperation, ExampleOperation, LogsOperation
from flwd.api.problems import InvalidField, ProblemError, problem_responses
from flwd.api.request_id import request_id
from flwd.api.schemas import (
    TENANT_MAX,
    TENANT_PATTERN,
    CreateRun,
    LogList,
    RestartRun,
    RunList,
    StepList,
)
from flwd.api.sse import (
    RUN_FINISHED,
    RUN_OUTPUT,
    SSEStream,
    end_frame,
    log_bytes,
    sse_response,
)
from flwd.errors import FlwdError, StorageError
from flwd.models import Event, Run, RunDetail
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
#: Longest `q` accepted by `GET /runs` (a search is a table scan: keep the pattern small).
SEARCH_MAX = 200
log = logging.getLogger(__name__)
PAGE_HEADERS = [
    ResponseHeader(name=name, description=text, documentation_only=True)
    for name, text in (
        ("X-Total-Count", "Number of items matching the filters"),
        ("Link", "RFC 8288 links to the first, prev, next and last pages"),
    )
]


def _not_started(request: Request[Any, Any, Any], exc: Exception) -> Exception:
    """What a failure to create or start a run answers: a domain error (unknown job, bad
    arguments, full queue, ...) as itself; the store failing or anything unexpected as the
    contract's 500 `execution-error`, its cause logged server side only."""
    if isinstance(exc, ProblemError) or (
        isinstance(exc, FlwdError) and not isinstance(exc, StorageError) and exc.status < 500
    ):
        return exc
    rid = request_id(request.scope)
    log.error("request %s could not create or start a run", rid, exc_info=exc)
    return ProblemError(
        "execution-error",
        f"The run could not be created or started; quote request id {rid} when reporting it",
    )


def _created(run: Run) -> Response[Run]:
    return Response(run, status_code=201, headers={"Location": f"{API_PREFIX}/runs/{run.run_id}"})


class RunController(Controller):
    path = "/runs"
    tags = ["runs"]

    @post(
        operation_id="createRun",
        operation_class=ExampleOperation,
        status_code=201,
        responses=problem_responses(400, 404, 409, 413, 415, 422, 429, 500),
    )
    async def create_run(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        data: JSONBody[CreateRun],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Run]:
        """Start a run. With `"async": false` the response waits for the run to end and
        carries its `result`; otherwise it returns at once with status `pending`."""
        try:
            run = await runs.create_run(
                data.job_id, data.args, tenant=data.tenant, idempotency_key=idempotency_key
            )
        except Exception as exc:
            raise _not_started(request, exc) from exc
        return _created(run if data.async_ else await runs.wait_run(run.run_id))

    @get(
        operation_id="listRuns",
        operation_class=ExampleOperation,
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
        q: Annotated[
            str | None,
            QueryParameter(
                max_length=SEARCH_MAX,
                description="Case-insensitive text searched in the job id, the error and the "
                "(secret-masked) arguments",
            ),
        ] = None,
        from_: Annotated[
            str | None,
            QueryParameter(
                name="from",
                description="Only runs created at or after this RFC 3339 time",
                examples=[Example(value="2026-01-15T10:30:00Z")],
            ),
        ] = None,
        to: Annotated[
            str | None,
            QueryParameter(
                description="Only runs created before this RFC 3339 time",
                examples=[Example(value="2026-01-16T00:00:00Z")],
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=INT64_MAX)] = 0,
    ) -> Response[RunList]:
        """Runs, newest first, with the `total` matching the filters (`q`, `from`, `to`
        combine with the others)."""
        items, total = await runs.list_runs(
            job_id=job_id,
            status=status,
            tenant=tenant,
            q=q or None,
            created_from=parse_time("from", from_),
            created_to=parse_time("to", to),
            limit=limit,
            offset=offset,
        )
        body = RunList(runs=items, total=total)
        return paginated(request, body, total=total, limit=limit, offset=offset)

    @get(
        "/{run_id:str}",
        operation_id="getRun",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 404, 500),
    )
    async def get_run(self, runs: Runs, run_id: FromPath[str]) -> RunDetail:
        """One run with its (secret-masked) `args`, its `steps` and its `result` once
        finished."""
        return RunDetail.of(await runs.get_run(run_id), await runs.list_steps(run_id))

    @post(
        "/{run_id:str}/cancel",
        operation_id="cancelRun",
        operation_class=ExampleOperation,
        status_code=200,
        responses=problem_responses(400, 404, 409, 500),
    )
    async def cancel_run(self, runs: Runs, run_id: FromPath[str]) -> Run:
        """Cancel a pending or running run; answers once its processes are gone."""
        return await runs.cancel_run(run_id)

    @post(
        "/{run_id:str}/restart",
        operation_id="restartRun",
        operation_class=ExampleOperation,
        status_code=201,
        responses=problem_responses(400, 404, 409, 413, 415, 422, 429, 500),
    )
    async def restart_run(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        run_id: FromPath[str],
        data: JSONBody[RestartRun | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Run]:
        """A new run of the same job with the same arguments (secret ones, never stored
        readable, must be given again in `args`)."""
        body = data or RestartRun()
        try:
            run = await runs.restart_run(run_id, args=body.args, idempotency_key=idempotency_key)
        except Exception as exc:
            raise _not_started(request, exc) from exc
        return _created(run if body.async_ else await runs.wait_run(run.run_id))

    @get(
        "/{run_id:str}/steps",
        operation_id="listSteps",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 404, 500),
    )
    async def list_steps(self, runs: Runs, run_id: FromPath[str]) -> StepList:
        """The run's steps and their states."""
        await runs.get_run(run_id)
        return StepList(steps=await runs.list_steps(run_id))

    @get(
        "/{run_id:str}/logs",
        operation_id="getRunLogs",
        response_headers=PAGE_HEADERS,
        responses={
            200: ResponseSpec(
                LogList,
                description="Log lines (JSON), or SSE with follow=true",
                generate_examples=False,
            ),
            **problem_responses(400, 404, 500),
        },
        operation_class=LogsOperation,
    )
    async def logs(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        feed: Feed,
        settings: AppSettings,
        run_id: FromPath[str],
        follow: FromQuery[bool] = False,
        since: Annotated[
            str | None,
            QueryParameter(
                description="After this event id (integer), or the lines stamped after this "
                "RFC 3339 time; exclusive"
            ),
        ] = None,
        limit: Annotated[
            int | None,
            QueryParameter(
                ge=1, le=MAX_LOG_PAGE, description=f"Lines per page [{LOG_PAGE}] (JSON only)"
            ),
        ] = None,
        tail: Annotated[
            int | None,
            QueryParameter(ge=1, le=MAX_LOG_PAGE, description="Only the last N lines"),
        ] = None,
        last_event_id: LastEventId = None,
    ) -> Response[LogList] | SSEStream:
        """The run's output lines, one page at a time (`X-Total-Count`, `Link: rel="next"`);
        `tail=N` gives the last N. `follow=true` streams them as Server-Sent Events
        (`event: log`) and ends with `event: end` once the run is terminal."""
        run = await runs.get_run(run_id)
        if tail is not None and (since is not None or limit is not None):
            raise ProblemError(
                "validation-error",
                "`tail` gives the last lines; it cannot be combined with `since` or `limit`",
                errors=[InvalidField(path="/tail", message="not with since or limit", in_="query")],
            )
        since_id, since_time = parse_since(since)
        if since_time is not None:
            since_id = await runs.log_position(run_id, since_time)
        if not follow:
            size = tail or limit or LOG_PAGE
            lines = await runs.read_logs(
                run_id, since_id=since_id, limit=None if tail else size + 1, tail=tail
            )
            more = len(lines) > size
            body = LogList(logs=lines[:size])
            return log_page(request, body, total=await runs.count_logs(run_id), more=more)
        after = resume_id(last_event_id, None)
        if after is None and tail is not None:
            first = await runs.read_logs(run_id, tail=tail, limit=1)
            after = first[0].id - 1 if first else None
        if after is None:
            after = since_id
        cut = asyncio.Event()
        batches = feed.follow(since=after, run_id=run_id, until_terminal=True, on_overflow=cut.set)
        ended = run.status in TERMINAL_RUN
        return sse_response(
            batches,
            heartbeat=settings.heartbeat,
            send_timeout=settings.send_timeout,
            render=_render_log,
            stop=lambda event: event.type == RUN_FINISHED,
            # a client resuming after the end still gets told the run has ended
            epilogue=[end_frame(run_id, run.status, None)] if ended else None,
            cut=cut,
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
        cut = asyncio.Event()
        batches = feed.follow(since=after, run_id=run_id, until_terminal=True, on_overflow=cut.set)
        return sse_response(
            batches,
            heartbeat=settings.heartbeat,
            send_timeout=settings.send_timeout,
            stop=lambda e: e.type == RUN_FINISHED,
            cut=cut,
        )


def _render_log(event: Event) -> Any:
    if event.type == RUN_OUTPUT:
        return log_bytes(event)
    if event.type == RUN_FINISHED:
        return end_frame(event.run_id, str(event.data.get("status", "")), event.id)
    return None
