"""Dependencies and small helpers shared by the controllers: the live services, the JSON
body guard, pagination headers and parsing of `since`/`Last-Event-ID`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import pluggy
from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import Dependency, Provide
from litestar.params import SkipValidationMarker

from flwd.api.problems import InvalidField, ProblemError
from flwd.api.schemas import LogList
from flwd.api.services import ApiServices, EventFeedView, JobRegistryView, RunServiceView
from flwd.settings import Settings

T = TypeVar("T")

# Injected by name and not validated, since the services are protocols, not data.
Runs = Annotated[RunServiceView, SkipValidationMarker(), Dependency(kind="named")]
Feed = Annotated[EventFeedView, SkipValidationMarker(), Dependency(kind="named")]
Registry = Annotated[JobRegistryView, SkipValidationMarker(), Dependency(kind="named")]
Services = Annotated[ApiServices, SkipValidationMarker(), Dependency(kind="named")]
AppSettings = Annotated[Settings, SkipValidationMarker(), Dependency(kind="named")]
Plugins = Annotated[pluggy.PluginManager, SkipValidationMarker(), Dependency(kind="named")]

MAX_PAGE = 1000
#: Lines in a page of `GET /runs/{id}/logs`: the default, and the most one may ask for.
LOG_PAGE = 1000
MAX_LOG_PAGE = 5000

#: Integers a client may send (offsets, event ids) are stored in SQLite, whose integers
#: are signed 64-bit: anything larger is refused as a validation error, not an overflow.
INT64_MAX = 2**63 - 1
_EVENT_ID = re.compile(r"^[0-9]{1,19}$")


def services_of(state: State) -> ApiServices:
    services = state.get("services")
    if services is None:  # only between app construction and lifespan start-up
        raise ProblemError("not-ready", "The server is still starting")
    assert isinstance(services, ApiServices)
    return services


def dependencies(state: State) -> dict[str, Provide]:
    """The providers of the services, settings and plugin manager, by name.

    They read the app's `state` object directly: a provider that declares a `state`
    parameter has it validated and copied by Litestar on every request, for every
    dependency. Plain functions (not coroutines) are called without an `await`."""
    settings = state["settings"]
    pm = state["plugin_manager"]
    assert isinstance(settings, Settings) and isinstance(pm, pluggy.PluginManager)

    def provide_runs() -> RunServiceView:
        return services_of(state).runs

    def provide_feed() -> EventFeedView:
        return services_of(state).events

    def provide_registry() -> JobRegistryView:
        return services_of(state).registry

    def provide_services() -> ApiServices:
        return services_of(state)

    def provide_settings() -> Settings:
        return settings

    def provide_plugin_manager() -> pluggy.PluginManager:
        return pm

    return {
        "plugin_manager": Provide(provide_plugin_manager, sync_to_thread=False),
        "runs": Provide(provide_runs, sync_to_thread=False),
        "feed": Provide(provide_feed, sync_to_thread=False),
        "registry": Provide(provide_registry, sync_to_thread=False),
        "services": Provide(provide_services, sync_to_thread=False),
        "settings": Provide(provide_settings, sync_to_thread=False),
    }


def paginated(
    request: Request[Any, Any, Any], body: T, *, total: int, limit: int, offset: int
) -> Response[T]:
    """`body` with `X-Total-Count`, `X-Limit`, `X-Offset` and an RFC 8288 `Link` header
    (`first`, `prev`, `next`, `last`), as peer provisioning APIs expose pagination."""

    def url(new_offset: int) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
        params.update(offset=str(new_offset), limit=str(limit))
        return f"<{request.url.path}?{urlencode(params)}>"

    links = [f'{url(0)}; rel="first"']
    if offset > 0:
        links.append(f'{url(max(0, offset - limit))}; rel="prev"')
    if offset + limit < total:
        links.append(f'{url(offset + limit)}; rel="next"')
    last = max(0, (total - 1) // limit * limit) if total else 0
    links.append(f'{url(last)}; rel="last"')
    headers = {
        "X-Total-Count": str(total),
        "X-Limit": str(limit),
        "X-Offset": str(offset),
        "Link": ", ".join(links),
    }
    return Response(body, headers=headers)


def log_page(
    request: Request[Any, Any, Any], body: LogList, *, total: int, more: bool
) -> Response[LogList]:
    """A page of log lines with `X-Total-Count` (the run's stored lines) and a `Link` to
    the `first` page and, when more lines follow, to the `next` one: `since` set to the
    page's last line id, which names a line exactly even inside a stored chunk."""

    def url(since: int | None) -> str:
        skip = ("since", "tail")
        params = {k: v for k, v in request.query_params.items() if k not in skip}
        if since is not None:
            params["since"] = str(since)
        query = urlencode(params)
        return f"<{request.url.path}{'?' if query else ''}{query}>"

    links = [f'{url(None)}; rel="first"']
    if more and body.logs:
        links.append(f'{url(body.logs[-1].id)}; rel="next"')
    return Response(body, headers={"X-Total-Count": str(total), "Link": ", ".join(links)})


def event_id(text: str) -> int | None:
    """An event id from a query or header: ASCII digits within SQLite's integer range
    (`str.isdigit` and `int()` also accept digits like `²` or `٣`), else None."""
    if not _EVENT_ID.match(text):
        return None
    number = int(text)
    return number if number <= INT64_MAX else None


def resume_id(last_event_id: str | None, since: str | None) -> int | None:
    """The event id a stream resumes after, from `Last-Event-ID` (wins) or `?since=`."""
    for value, name, where in (
        (last_event_id, "/Last-Event-ID", "header"),
        (since, "/since", "query"),
    ):
        if value is None or value == "":
            continue
        number = event_id(value)
        if number is None:
            raise ProblemError(
                "validation-error",
                f"The resume point must be an integer event id from 0 to {INT64_MAX}",
                errors=[
                    InvalidField(
                        path=name,
                        message="must be a non-negative integer",
                        in_=where,
                    )
                ],
            )
        return number
    return None


async def resume_point(
    runs: RunServiceView,
    last_event_id: str | None,
    since: str | None,
    *,
    run_id: str | None = None,
    job_id: str | None = None,
) -> int | None:
    """`resume_id`, refused with `events-pruned` (410) when retention deleted events the
    stream would have replayed after it (see docs/events.md, "Resuming after pruning")."""
    after = resume_id(last_event_id, since)
    await runs.check_resume(after, run_id=run_id, job_id=job_id)
    return after


def parse_since(since: str | None) -> tuple[int | None, datetime | None]:
    """`since` for the JSON logs endpoint: an event id (integer) or an RFC 3339 timestamp."""
    if since is None or since == "":
        return None, None
    if since.isascii() and since.isdigit():
        number = event_id(since)
        if number is not None:
            return number, None
    try:
        if not since.isascii():
            raise ValueError(since)
        moment = datetime.fromisoformat(since.replace("z", "Z"))
    except ValueError:
        raise ProblemError(
            "validation-error",
            "`since` must be an event id or an RFC 3339 timestamp",
            errors=[
                InvalidField(
                    path="/since",
                    message="expected an integer event id or a timestamp like 2024-01-15T10:30:00Z",
                    in_="query",
                )
            ],
        ) from None
    if moment.tzinfo is None:
        raise ProblemError(
            "validation-error",
            "`since` needs a time zone (e.g. a trailing Z)",
            errors=[
                InvalidField(path="/since", message="timestamp has no UTC offset", in_="query")
            ],
        )
    return None, moment


def parse_time(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 timestamp given in the query parameter `name` (with a UTC offset)."""
    if value is None or value == "":
        return None
    try:
        if not value.isascii():
            raise ValueError(value)
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ProblemError(
            "validation-error",
            f"`{name}` must be an RFC 3339 timestamp with a UTC offset",
            errors=[
                InvalidField(
                    path=f"/{name}",
                    message="expected a timestamp like 2024-01-15T10:30:00Z",
                    in_="query",
                )
            ],
        )
    return moment
