"""`FlwdClient`: the HTTP client the CLI (and anything else in Python) uses to drive a
running `flwd serve`.

Problem responses come back as the domain errors of `flwd.errors` (a missing job raises
`JobNotFound`, invalid arguments `ArgumentsInvalid` with the same `errors` local mode
gives), so callers handle local and remote mode alike. Anything else becomes a
`ClientError` carrying the problem's status, type and detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import httpx
import msgspec

from flwd import errors
from flwd.models import Artifact, Event, LogLine, Run

T = TypeVar("T")
API_PREFIX = "/api/v1"
PROBLEM_BASE = "https://flowd.org/problems/"
#: Lines asked for per page of logs (the server's maximum page).
_LOG_PAGE = 5000


class ClientError(errors.FlwdError):
    """The server answered with a problem flwd has no domain error for, or could not be
    reached (`status` is None then)."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        type: str | None = None,
        title: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type
        self.title = title
        self.problem = problem or {}


class _RunList(msgspec.Struct):
    runs: list[Run]
    total: int


class _LogList(msgspec.Struct):
    logs: list[LogLine]


class _ArtifactList(msgspec.Struct):
    artifacts: list[Artifact]


def _with_detail(exc: errors.FlwdError, detail: str) -> errors.FlwdError:
    """Keep the server's wording (it may know more, e.g. the run's current status)."""
    exc.detail = detail
    exc.args = (detail,)
    return exc


def problem_to_error(problem: dict[str, Any], status: int, **context: str) -> errors.FlwdError:
    """The domain error for a problem document; `context` names the ids the request used."""
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_BASE)
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    fields = [
        errors.FieldError(path=str(e.get("path", "")), message=str(e.get("message", "")))
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    job_id, run_id = context.get("job_id", "?"), context.get("run_id", "?")
    factories: dict[str, Callable[[], errors.FlwdError]] = {
        "job-not-found": lambda: errors.JobNotFound(job_id),
        "run-not-found": lambda: errors.RunNotFound(run_id),
        "artifact-not-found": lambda: errors.ArtifactNotFound(context.get("artifact_id", "?")),
        # The API points into the request body (`/args/x`); local mode points into args.
        "validation-error": lambda: errors.ArgumentsInvalid(
            detail,
            [
                errors.FieldError(path=f.path.removeprefix("/args"), message=f.message)
                for f in fields
            ],
        ),
        "job-invalid": lambda: errors.JobNotRunnable(job_id, [f.message for f in fields]),
        "run-not-cancellable": lambda: errors.RunNotCancellable(run_id, "finished"),
        "idempotency-conflict": lambda: errors.IdempotencyKeyReused(context.get("key", "?")),
        "queue-full": lambda: errors.QueueFull(0, int(problem.get("retry_after") or 1)),
        "permission-denied": lambda: errors.PermissionDenied(detail),
        "storage-error": lambda: errors.StorageError(detail),
    }
    factory = factories.get(slug)
    if factory is None:
        return ClientError(
            detail,
            status=status,
            type=str(problem.get("type") or ""),
            title=str(problem.get("title") or ""),
            problem=problem,
        )
    return _with_detail(factory(), detail)


class FlwdClient:
    """Async client of the flwd HTTP API; use as `async with FlwdClient(url) as client:`."""

    #: Reconnections `follow_events` attempts in a row without receiving an event.
    max_reconnects = 8
    reconnect_delay = 0.5

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith(API_PREFIX) else root + API_PREFIX
        headers = {"Accept": "application/json", "User-Agent": "flwd-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=False
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

    def _raise_for_problem(self, response: httpx.Response, context: dict[str, str]) -> None:
        if response.is_success:
            return
        try:
            problem = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"detail": f"HTTP {response.status_code}: {response.text[:200]}"}
        raise problem_to_error(problem, response.status_code, **context)

    async def _request(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        context: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for_problem(response, context or {})
        return msgspec.json.decode(response.content, type=type_)

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
        return await self._request(
            "POST",
            "/runs",
            Run,
            json=body,
            headers=headers,
            # A waited run takes as long as the job does.
            timeout=httpx.Timeout(self.timeout, read=None) if wait else httpx.USE_CLIENT_DEFAULT,
            context={"job_id": job_id, "key": idempotency_key or ""},
        )

    async def get_run(self, run_id: str) -> Run:
        return await self._request("GET", f"/runs/{quote(run_id)}", Run, context={"run_id": run_id})

    async def list_runs(
        self,
        *,
        job_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Run], int]:
        """Runs newest first, and how many match in total."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if job_id:
            params["job_id"] = job_id
        if status:
            params["status"] = str(status)
        page = await self._request("GET", "/runs", _RunList, params=params)
        return page.runs, page.total

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel; returns the run once it is terminal."""
        return await self._request(
            "POST",
            f"/runs/{quote(run_id)}/cancel",
            Run,
            timeout=httpx.Timeout(self.timeout, read=None),
            context={"run_id": run_id},
        )

    async def restart_run(self, run_id: str, args: dict[str, Any] | None = None) -> Run:
        """A new run of the same job with the same (or overriding) arguments."""
        return await self._request(
            "POST",
            f"/runs/{quote(run_id)}/restart",
            Run,
            json={"args": args} if args is not None else {},
            context={"run_id": run_id},
        )

    async def logs(self, run_id: str, *, since_id: int | None = None) -> list[LogLine]:
        """Stored log lines after event id `since_id` (all when None), read page by page
        (the server answers at most `_LOG_PAGE` lines at a time)."""
        lines: list[LogLine] = []
        while True:
            params = {"limit": str(_LOG_PAGE)}
            if since_id is not None:
                params["since"] = str(since_id)
            page = await self._request(
                "GET",
                f"/runs/{quote(run_id)}/logs",
                _LogList,
                params=params,
                context={"run_id": run_id},
            )
            lines.extend(page.logs)
            if len(page.logs) < _LOG_PAGE:
                return lines
            since_id = page.logs[-1].id

    # -- events -----------------------------------------------------------------------

    async def follow_events(self, run_id: str, *, since: int | None = None) -> AsyncIterator[Event]:
        """Events of one run, from its first (or after `since`), ending after
        `run.finished`. A dropped connection is resumed with `Last-Event-ID`, so no event is
        lost or repeated; after `max_reconnects` failures in a row, `ClientError`."""
        last_id = since
        failures = 0
        finished = False
        path = f"/runs/{quote(run_id)}/events"
        while not finished:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    headers=headers,
                    # Heartbeats arrive every <= 15 s; silence for much longer means a dead peer.
                    timeout=httpx.Timeout(self.timeout, read=max(self.timeout, 60.0)),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        self._raise_for_problem(response, {"run_id": run_id})
                    async for event in _parse_events(response.aiter_lines()):
                        failures = 0
                        last_id = event.id
                        yield event
                        if event.type == "run.finished":
                            finished = True
                            break
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self.max_reconnects:
                    raise self._unreachable(exc) from exc
            except ClientError as exc:
                # 5xx/503 while a server restarts is worth waiting for; 4xx is not.
                failures += 1
                if exc.status is None or exc.status < 500 or failures > self.max_reconnects:
                    raise
            else:
                if not finished:
                    failures += 1  # the server closed the stream early (e.g. slow consumer)
                    if failures > self.max_reconnects:
                        raise ClientError(f"the event stream of {run_id} keeps closing early")
            if not finished:
                await asyncio.sleep(min(self.reconnect_delay * failures, 5.0))

    # -- artifacts --------------------------------------------------------------------

    async def list_artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Artifact]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if run_id:
            params["run_id"] = run_id
        page = await self._request("GET", "/artifacts", _ArtifactList, params=params)
        return page.artifacts

    async def download_artifact(self, artifact_id: str, dest: pathlib.Path) -> pathlib.Path:
        """Stream an artifact to `dest` (a file, or a directory to put it in under its
        name). Written to a temporary file first, so a broken download leaves nothing."""
        context = {"artifact_id": artifact_id}
        try:
            async with self._http.stream(
                "GET", f"/artifacts/{quote(artifact_id)}", headers={"Accept": "*/*"}
            ) as response:
                if not response.is_success:
                    await response.aread()
                    self._raise_for_problem(response, context)
                target = dest
                if await asyncio.to_thread(dest.is_dir):
                    name = _filename(response.headers.get("content-disposition", ""))
                    target = dest / (name or artifact_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".flwd-download-")
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


_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def _filename(disposition: str) -> str | None:
    """The file name from a Content-Disposition header, reduced to a safe base name."""
    matches = _FILENAME.findall(disposition)
    if not matches:
        return None
    name = os.path.basename(unquote(matches[-1]).replace("\\", "/"))
    return name if name not in ("", ".", "..") else None


async def _parse_events(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Run events from an SSE line stream (comments and heartbeats skipped)."""
    event_type: str | None = None
    event_id: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data and event_type and event_id is not None:
                yield _event(event_id, event_type, "\n".join(data))
            event_type, event_id, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id":
            event_id = value


def _event(event_id: str, event_type: str, data: str) -> Event:
    payload = msgspec.json.decode(data)
    envelope = {key: payload.pop(key, None) for key in ("id", "type", "run_id", "job_id")}
    timestamp = msgspec.convert(payload.pop("timestamp"), datetime)
    return Event(
        id=int(event_id),
        type=event_type,
        run_id=str(envelope["run_id"]),
        job_id=str(envelope["job_id"]),
        timestamp=timestamp,
        data=payload,
    )
