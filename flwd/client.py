"""`FlwdClient`: the Python client of the flwd HTTP API, used by the CLI's remote mode and
by anything else that drives a running `flwd serve` (the TUI, the MCP server).

Every route has a typed method returning the Structs the server encodes (`flwd.models`,
`flwd.jobs.views`). Problem responses come back as the domain errors of `flwd.errors`,
through the same table the server renders them from (a missing job raises `JobNotFound`,
invalid arguments `ArgumentsInvalid` with the `errors` local mode gives); a problem with no
domain error (an HTTP-level refusal) or no answer at all is a `ClientError`.

Streams (`follow_events`, `follow_logs`, `stream_events`) resume after a dropped connection
with `Last-Event-ID`, so no event is lost or repeated, and give up after a bounded number
of failed reconnections in a row.

`find_local_server(data_dir)` tells whether a server runs on a local data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent, SSEError

from flwd import API_PREFIX, errors
from flwd.api.schemas import JobsChanged
from flwd.jobs.views import JobDetail, JobList
from flwd.local_server import ServerInfo, find_local_server
from flwd.models import (
    Artifact,
    ArtifactList,
    Event,
    Health,
    LogLine,
    LogList,
    Ready,
    Run,
    RunDetail,
    RunList,
    Step,
    StepList,
    SystemInfo,
)

_T = TypeVar("_T")
_Item = TypeVar("_Item")

__all__ = [
    "ClientError",
    "FlwdClient",
    "ServerInfo",
    "find_local_server",
    "problem_to_error",
]
#: Lines asked for per page of logs (the server's maximum page).
_LOG_PAGE = 5000


class ClientError(errors.FlwdError):
    """The server answered with a problem that has no domain error (`slug` and `status`
    say which), answered something that is not a problem, or could not be reached
    (`status` is 0 then)."""

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        slug: str = "",
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.problem = dict(problem or {})
        self.title = str(self.problem.get("title") or "")


def problem_to_error(
    problem: Mapping[str, Any], status: int, context: Mapping[str, str] | None = None
) -> errors.FlwdError:
    """The error a problem document stands for: the domain error class registered for its
    slug (`flwd.errors.problem_class`), else a `ClientError`. `context` names the ids the
    request used (`job_id`, `run_id`, `artifact_id`, `key`)."""
    kind = str(problem.get("type") or "")
    slug = kind.removeprefix(errors.PROBLEM_BASE) if kind.startswith(errors.PROBLEM_BASE) else ""
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    cls = errors.problem_class(slug)
    if cls is None or cls is errors.FlwdError:
        return ClientError(detail, status=status, slug=slug, problem=problem)
    return cls.from_problem(detail, problem, context or {})


class FlwdClient:
    """Async client of the flwd HTTP API; use as `async with FlwdClient(url) as client:`.

    `base_url` is the server's root (`http://127.0.0.1:8080`) or its API root (with
    `flwd.API_PREFIX`); `token` is sent as a bearer token. For an HTTPS server,
    `ca_cert` names a PEM file of the certificate authority (or the self-signed server
    certificate) to trust; without it the system's store is used (or `SSL_CERT_FILE`)."""

    #: Reconnections a stream attempts in a row without receiving an event.
    max_reconnects = 8
    #: Seconds before the first reconnection; grows linearly, at most 5 s.
    reconnect_delay = 0.5

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_cert: str | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith(API_PREFIX) else root + API_PREFIX
        headers = {"Accept": "application/json", "User-Agent": "flwd-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
            verify=ssl.create_default_context(cafile=ca_cert) if ca_cert else True,
        )

    async def __aenter__(self) -> FlwdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ---------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"flwd at {self.base_url} did not answer in time: {exc!r}")
        return ClientError(f"cannot reach flwd at {self.base_url}: {exc}")

    @staticmethod
    def _raise_for_problem(response: httpx.Response, context: Mapping[str, str]) -> None:
        if response.is_success:
            return
        try:
            problem = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            problem = None
        if not isinstance(problem, dict):
            text = response.text[:200]
            raise ClientError(f"HTTP {response.status_code}: {text}", status=response.status_code)
        raise problem_to_error(problem, response.status_code, context)

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[_T],
        *,
        context: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> _T:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for_problem(response, context or {})
        try:
            return msgspec.json.decode(response.content, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ClientError(
                f"unexpected answer from {method} {path}: {exc}", status=response.status_code
            ) from exc

    @staticmethod
    def _params(**values: Any) -> dict[str, str]:
        return {k: str(v) for k, v in values.items() if v is not None}

    # -- jobs -------------------------------------------------------------------------

    async def list_jobs(
        self, *, namespace: str | None = None, source: str | None = None
    ) -> JobList:
        """Every discovered job (and the folders that failed to load, under `invalid`)."""
        params = self._params(namespace=namespace, source=source)
        return await self._call("GET", "/jobs", JobList, params=params)

    async def get_job(self, job_id: str) -> JobDetail:
        """One job with its argument schema and steps."""
        return await self._call(
            "GET", f"/jobs/{quote(job_id, safe='/')}", JobDetail, context={"job_id": job_id}
        )

    # -- runs -------------------------------------------------------------------------

    async def create_run(
        self,
        job_id: str,
        args: dict[str, Any] | None = None,
        *,
        wait: bool = False,
        tenant: str | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Start a run; with `wait=True` return only once it has ended, with its result."""
        body: dict[str, Any] = {"job_id": job_id, "args": args or {}, "async": not wait}
        if tenant is not None:
            body["tenant"] = tenant
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call(
            "POST",
            "/runs",
            Run,
            json=body,
            headers=headers,
            timeout=self._waiting(wait),
            context={"job_id": job_id, "key": idempotency_key or ""},
        )

    def _waiting(self, wait: bool) -> Any:
        # A waited run takes as long as the job does.
        return httpx.Timeout(self.timeout, read=None) if wait else httpx.USE_CLIENT_DEFAULT

    async def get_run(self, run_id: str) -> RunDetail:
        """One run with its steps and, once finished, its result."""
        return await self._call(
            "GET", f"/runs/{quote(run_id)}", RunDetail, context={"run_id": run_id}
        )

    async def list_runs(
        self,
        *,
        job_id: str | None = None,
        status: str | None = None,
        tenant: str | None = None,
        q: str | None = None,
        created_from: datetime | str | None = None,
        created_to: datetime | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> RunList:
        """One page of runs, newest first, with the `total` matching the filters: `q`
        searches the job id, error and (masked) arguments; `created_from`/`created_to`
        (the API's `from`/`to`) bound the creation time."""
        params = self._params(
            job_id=job_id,
            status=status,
            tenant=tenant,
            q=q,
            limit=limit,
            offset=offset,
            **{"from": _stamp(created_from), "to": _stamp(created_to)},
        )
        return await self._call("GET", "/runs", RunList, params=params)

    def iter_runs(
        self,
        *,
        job_id: str | None = None,
        status: str | None = None,
        tenant: str | None = None,
        q: str | None = None,
        created_from: datetime | str | None = None,
        created_to: datetime | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Run]:
        """Every matching run, newest first, fetched a page at a time."""

        async def page(offset: int) -> tuple[list[Run], int]:
            body = await self.list_runs(
                job_id=job_id,
                status=status,
                tenant=tenant,
                q=q,
                created_from=created_from,
                created_to=created_to,
                limit=page_size,
                offset=offset,
            )
            return body.runs, body.total

        return _all_pages(page)

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel; returns the run once it is terminal."""
        return await self._call(
            "POST",
            f"/runs/{quote(run_id)}/cancel",
            Run,
            timeout=self._waiting(True),
            context={"run_id": run_id},
        )

    async def restart_run(
        self,
        run_id: str,
        args: dict[str, Any] | None = None,
        *,
        wait: bool = False,
        idempotency_key: str | None = None,
    ) -> Run:
        """A new run of the same job with the same arguments, `args` overriding them
        (secret arguments are never stored readable and must be given again)."""
        body: dict[str, Any] = {"async": not wait}
        if args is not None:
            body["args"] = args
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call(
            "POST",
            f"/runs/{quote(run_id)}/restart",
            Run,
            json=body,
            headers=headers,
            timeout=self._waiting(wait),
            context={"run_id": run_id, "key": idempotency_key or ""},
        )

    async def list_steps(self, run_id: str) -> list[Step]:
        """The run's steps and their states."""
        body = await self._call(
            "GET", f"/runs/{quote(run_id)}/steps", StepList, context={"run_id": run_id}
        )
        return body.steps

    async def logs(
        self,
        run_id: str,
        *,
        since: int | datetime | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogLine]:
        """Stored log lines after event id (or time) `since`, or the last `tail` lines.
        With `limit`, one page of at most that many lines; without, every line, read page
        by page (the server answers at most `_LOG_PAGE` lines at a time)."""
        after: int | str | None = since.isoformat() if isinstance(since, datetime) else since
        if tail is not None or limit is not None:
            return await self._log_page(run_id, after, limit, tail)
        lines: list[LogLine] = []
        while True:
            page = await self._log_page(run_id, after, _LOG_PAGE, None)
            lines.extend(page)
            if len(page) < _LOG_PAGE:
                return lines
            after = page[-1].id

    async def _log_page(
        self, run_id: str, since: int | str | None, limit: int | None, tail: int | None
    ) -> list[LogLine]:
        body = await self._call(
            "GET",
            f"/runs/{quote(run_id)}/logs",
            LogList,
            params=self._params(since=since, limit=limit, tail=tail),
            context={"run_id": run_id},
        )
        return body.logs

    # -- streams ----------------------------------------------------------------------

    async def follow_events(self, run_id: str, *, since: int | None = None) -> AsyncIterator[Event]:
        """Events of one run, from its first (or after event id `since`), ending after
        `run.finished`."""
        stream = self._resumable(f"/runs/{quote(run_id)}/events", {}, since, {"run_id": run_id})
        async for frame in stream:
            event = _event(frame)
            yield event
            if event.type == "run.finished":
                return

    async def follow_logs(self, run_id: str, *, since: int | None = None) -> AsyncIterator[LogLine]:
        """A run's output lines as they are written (after event id `since`), ending once
        the run is terminal (`logs?follow=true`)."""
        path = f"/runs/{quote(run_id)}/logs"
        stream = self._resumable(path, {"follow": "true"}, since, {"run_id": run_id})
        async for frame in stream:
            if frame.event == "end":
                return
            if frame.event == "log":
                yield msgspec.json.decode(frame.data, type=LogLine)

    async def stream_events(
        self,
        *,
        run_id: str | None = None,
        job_id: str | None = None,
        since: int | None = None,
    ) -> AsyncIterator[Event]:
        """Run events as they happen (`/events/runs`); never ends by itself. Unfiltered
        it starts live; with `run_id` at that run's first event; `since` resumes after an
        event id. A dropped connection is resumed from the last event received."""
        params = self._params(run_id=run_id, job_id=job_id)
        context = {"run_id": run_id} if run_id else {}
        async for frame in self._resumable("/events/runs", params, since, context):
            yield _event(frame)

    async def follow_jobs(self) -> AsyncIterator[JobsChanged]:
        """`jobs.changed` events (`/events/jobs`) as hot reload changes the catalogue;
        never ends by itself. Changes made while the connection was down are not replayed
        (the stream is live only): after `FlwdClient.max_reconnects` are used up it raises;
        a caller that must not miss a change re-reads `list_jobs()` when it (re)starts."""
        async for frame in self._resumable("/events/jobs", {}, None, {}):
            if frame.event == "jobs.changed":
                yield msgspec.json.decode(frame.data, type=JobsChanged)

    async def _resumable(
        self,
        path: str,
        params: dict[str, str],
        since: int | None,
        context: Mapping[str, str],
    ) -> AsyncIterator[ServerSentEvent]:
        """SSE frames of `path`, reconnecting with `Last-Event-ID` after a drop. The caller
        stops iterating when its stream's last frame arrived; a finite stream that the
        server closes before that is reconnected too (e.g. after a slow-client cut)."""
        last_id = since
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    # Heartbeats come every <= 15 s; much longer silence means a dead peer.
                    timeout=httpx.Timeout(self.timeout, read=max(self.timeout, 60.0)),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        self._raise_for_problem(response, context)
                    async for frame in EventSource(response).aiter_sse():
                        if not frame.event or frame.event == "message":
                            continue  # comments, heartbeats, retry hints
                        failures = 0
                        if frame.id:
                            last_id = int(frame.id)
                        yield frame
            except (httpx.HTTPError, SSEError) as exc:
                failures += 1
                if failures > self.max_reconnects:
                    if isinstance(exc, SSEError):  # (an httpx.TransportError too)
                        raise ClientError(f"{path} is not an event stream: {exc}") from exc
                    raise self._unreachable(exc) from exc
            except ClientError as exc:
                # 5xx while a server restarts is worth waiting for; 4xx is not.
                failures += 1
                if exc.status < 500 or failures > self.max_reconnects:
                    raise
            else:
                failures += 1  # the server closed the stream before its end
                if failures > self.max_reconnects:
                    raise ClientError(f"the event stream {path} keeps closing early")
            await asyncio.sleep(min(self.reconnect_delay * failures, 5.0))

    # -- artifacts --------------------------------------------------------------------

    async def list_artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> ArtifactList:
        """One page of artifacts, newest first, with the `total` matching."""
        params = self._params(run_id=run_id, limit=limit, offset=offset)
        return await self._call("GET", "/artifacts", ArtifactList, params=params)

    def iter_artifacts(
        self, *, run_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Artifact]:
        """Every matching artifact, newest first, fetched a page at a time."""

        async def page(offset: int) -> tuple[list[Artifact], int]:
            body = await self.list_artifacts(run_id=run_id, limit=page_size, offset=offset)
            return body.artifacts, body.total

        return _all_pages(page)

    async def download_artifact(
        self, artifact_id: str, dest: str | os.PathLike[str]
    ) -> pathlib.Path:
        """Stream an artifact to `dest`: a file, or a directory to put it in under its
        name (an existing directory, or a path written with a trailing `/`). Written to a
        temporary file first, so a broken download leaves nothing."""
        context = {"artifact_id": artifact_id}
        as_dir = os.fspath(dest).endswith(("/", os.sep))
        dest = pathlib.Path(dest)
        try:
            async with self._http.stream(
                "GET", f"/artifacts/{quote(artifact_id)}", headers={"Accept": "*/*"}
            ) as response:
                if not response.is_success:
                    await response.aread()
                    self._raise_for_problem(response, context)
                target = dest
                if as_dir or await asyncio.to_thread(dest.is_dir):
                    name = _filename(response.headers.get("content-disposition", ""))
                    target = dest / (name or artifact_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Created like any new file (0666 less the umask), as a local copy is.
                tmp = target.parent / f".flwd-download-{secrets.token_hex(8)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    with os.fdopen(fd, "wb") as out:
                        async for chunk in response.aiter_bytes(1 << 16):
                            out.write(chunk)
                    os.replace(tmp, target)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return target

    # -- system -----------------------------------------------------------------------

    async def health(self) -> Health:
        """Liveness, version and uptime."""
        return await self._call("GET", "/health", Health)

    async def ready(self) -> Ready:
        """Readiness; raises `ClientError` with status 503 (`not-ready`) when not ready."""
        return await self._call("GET", "/ready", Ready)

    async def system_info(self) -> SystemInfo:
        """Version, job sources and installed extensions."""
        return await self._call("GET", "/system/info", SystemInfo)


async def _all_pages(
    fetch: Callable[[int], Awaitable[tuple[list[_Item], int]]],
) -> AsyncIterator[_Item]:
    """Items of every page from `fetch(offset) -> (items, total)`, until a short page or
    the total is reached (bounded: a page adds at least one item or the walk stops)."""
    offset = 0
    while True:
        items, total = await fetch(offset)
        for item in items:
            yield item
        offset += len(items)
        if not items or offset >= total:
            return


_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def _filename(disposition: str) -> str | None:
    """The file name from a Content-Disposition header, reduced to a safe base name."""
    matches = _FILENAME.findall(disposition)
    if not matches:
        return None
    name = os.path.basename(unquote(matches[-1]).replace("\\", "/"))
    return name if name not in ("", ".", "..") else None


def _event(frame: ServerSentEvent) -> Event:
    """A run event from its SSE frame (the envelope and the data are one flat object)."""
    payload = msgspec.json.decode(frame.data)
    envelope = {key: payload.pop(key, None) for key in ("id", "type", "run_id", "job_id")}
    timestamp = msgspec.convert(payload.pop("timestamp"), datetime)
    return Event(
        id=int(frame.id) if frame.id else int(envelope["id"] or 0),
        type=frame.event,
        run_id=str(envelope["run_id"]),
        job_id=str(envelope["job_id"]),
        timestamp=timestamp,
        data=payload,
    )


def _stamp(value: datetime | str | None) -> str | None:
    """A time for a query parameter: RFC 3339 text as given, or an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a time filter needs a timezone-aware datetime")
        return value.isoformat()
    return value
