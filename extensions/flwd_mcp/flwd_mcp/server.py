"""The MCP server: the protocol handlers over a `Flwd` (one per caller), shared by the
stdio and streamable HTTP transports.

`FlwdMcp.server` is the SDK's low-level `Server`. Handlers find the caller's `Flwd`
through `flwd_for(ctx)`: the transport decides who is calling. Notifications that no
request asked for — `notifications/tools/list_changed` after hot reload, and
`notifications/resources/updated` for subscribed runs — go to every connection that
made a request (2025-11-25 and older: on its standalone stream) and to the
`subscriptions/listen` streams of 2026-07-28 clients. A run is followed while someone
subscribed to it: a 2025-11-25 session (`resources/subscribe`, updates on that session)
or an open listen stream that asked for its URI (updates on the bus the streams read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import anyio
import mcp_types as types
import msgspec
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from flwd import __version__
from flwd.errors import FlwdError
from flwd.jobs.views import JobDetail
from flwd.models import Event
from flwd.states import TERMINAL_RUN, RunStatus
from flwd_mcp import naming
from flwd_mcp.backends import LOG_TAIL, Flwd
from flwd_mcp.progress import RunProgress
from flwd_mcp.schemas import elicitation_form, form_property, missing_required
from flwd_mcp.tools import (
    GENERIC_TOOLS,
    builtins,
    error_result,
    finished_call,
    format_log,
    job_tool,
    run_outcome,
    structured,
    tool_error,
)

log = logging.getLogger(__name__)

FlwdFor = Callable[[ServerRequestContext[Any, Any]], Flwd]

_RUN_URI: Final = re.compile(r"^flwd://runs/(?P<run_id>[A-Za-z0-9_-]{1,100})(?P<logs>/logs)?$")
#: connections remembered for unsolicited notifications (the oldest is forgotten first)
MAX_CONNECTIONS: Final = 10_000
#: seconds between two `resources/updated` of a run's log while it writes
LOG_UPDATE_INTERVAL: Final = 0.5
#: run URIs one listen stream may follow (those past it are not honored)
MAX_LISTENED_URIS: Final = 100
#: lines a read of `flwd://runs/{id}/logs` returns (the last ones)
RESOURCE_LOG_LINES: Final = 1000
_encode = msgspec.json.Encoder().encode


def _holds_secret(job: JobDetail, name: str) -> bool:
    """Whether top-level argument `name` is a secret or holds one."""
    pointer = "/" + name.replace("~", "~0").replace("/", "~1")
    return any(
        p == pointer or pointer.startswith(p + "/") or p.startswith(pointer + "/")
        for p in job.secret_args
    )


def connection_key(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """Which connection a request came on: its streamable HTTP session id, or `stdio`;
    None for a connection with no channel of its own (stateless, 2026-07-28)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    request = ctx.request
    if request is None:
        return "stdio"
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    return session_id if isinstance(session_id, str) else None


class _ToolsChangeServer(Server[Any]):
    """The SDK's server, declaring `tools.listChanged` by default: the streamable HTTP
    session manager asks for the initialization options without arguments."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class FlwdMcp:
    """The MCP server of one flwd: `server` for the transports, `watch_catalog` to follow
    hot reload (run it for the server's lifetime)."""

    def __init__(self, flwd_for: FlwdFor, *, name: str = "flwd") -> None:
        self.flwd_for = flwd_for
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self._sessions: OrderedDict[str, ServerSession] = OrderedDict()
        #: runs followed for 2025-11-25 subscriptions, by (connection, uri)
        self._watches: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: runs followed for listen streams, by uri: the task and how many streams want it
        self._listened: dict[str, tuple[asyncio.Task[None], int]] = {}
        self.server: Server[Any] = _ToolsChangeServer(
            name,
            version=__version__,
            instructions="Every flwd job is a tool: calling it starts a run and returns its "
            "result. Tools named flwd__* list and manage runs.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen,
        )

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options()

    # -- connections and unsolicited notifications --------------------------------------

    def _remember(self, ctx: ServerRequestContext[Any, Any]) -> None:
        key = connection_key(ctx)
        if key is None:
            return
        self._sessions[key] = ctx.session
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_CONNECTIONS:
            self._sessions.popitem(last=False)

    async def _tell_all(self, send: Callable[[ServerSession], Any]) -> None:
        for key, session in list(self._sessions.items()):
            try:
                await send(session)
            except Exception:  # the connection is gone: forget it
                self._sessions.pop(key, None)

    async def tools_changed(self) -> None:
        """Tell every client the tool list changed."""
        await self._tell_all(lambda s: s.send_tool_list_changed())
        await self.bus.publish(ToolsListChanged())

    async def watch_catalog(self, changes: AsyncIterator[object]) -> None:
        """Send `tools/list_changed` for each change `changes` yields, until cancelled."""
        async for _ in changes:
            try:
                await self.tools_changed()
            except Exception:
                log.exception("could not send tools/list_changed")

    def forget_connection(self, key: str) -> None:
        self._sessions.pop(key, None)
        for (conn, uri), task in list(self._watches.items()):
            if conn == key:
                task.cancel()
                self._watches.pop((conn, uri), None)

    async def aclose(self) -> None:
        """Stop following subscribed runs and end the listen streams."""
        self.listen.close()
        tasks = [*self._watches.values(), *(task for task, _ in self._listened.values())]
        self._watches.clear()
        self._listened.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- tools --------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        flwd = self.flwd_for(ctx)
        jobs = await flwd.jobs()
        return types.ListToolsResult(tools=[*(job_tool(job) for job in jobs), *GENERIC_TOOLS])

    async def _job_for(self, flwd: Flwd, name: str) -> JobDetail | None:
        if "__" not in name:  # a short name is the id with `/` written `_`
            try:
                job = await flwd.job(name.replace("_", "/"))
            except FlwdError:
                return None
            return job if naming.tool_name(job.id) == name else None
        for job in await flwd.jobs():
            if naming.tool_name(job.id) == name:
                return job
        return None

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self._remember(ctx)
        flwd = self.flwd_for(ctx)
        args = dict(params.arguments or {})
        try:
            if params.name in naming.GENERIC:
                return await self._generic(flwd, params.name, args)
            job = await self._job_for(flwd, params.name)
            if job is None:
                return tool_error(f"unknown tool '{params.name}' (or not one you may call)")
            return await self._run_job(ctx, flwd, job, args)
        except FlwdError as exc:
            return error_result(exc)
        except (ValueError, TypeError) as exc:  # a generic tool's argument of the wrong kind
            return tool_error(f"invalid arguments: {exc}")

    async def _ask_missing(
        self, ctx: ServerRequestContext[Any, Any], job: JobDetail, args: dict[str, Any]
    ) -> types.CallToolResult | None:
        """Ask the user for missing required arguments by elicitation, when the client
        can be asked; a missing secret is never asked for (the protocol forbids asking
        for sensitive values in a form) and is a tool error."""
        missing = missing_required(job.args, args)
        if not missing:
            return None
        secrets = [name for name in missing if _holds_secret(job, name)]
        if secrets:
            names = ", ".join(f"/{name}" for name in secrets)
            return tool_error(
                f"missing secret argument(s) {names}: give them in the call's arguments "
                "(secrets are never asked for by elicitation)"
            )
        askable = [name for name in missing if form_property(job.args, name) is not None]
        if len(askable) != len(missing) or not self._can_elicit(ctx):
            return None  # validation names what is missing
        answer = await ctx.session.elicit_form(
            f"The job {job.id} needs: {', '.join(askable)}",
            elicitation_form(job.args, askable),
            related_request_id=ctx.request_id,
        )
        if answer.action != "accept" or not answer.content:
            return tool_error(
                f"not run: the missing argument(s) {', '.join('/' + n for n in askable)} "
                f"were not given (elicitation {answer.action})"
            )
        args.update({k: v for k, v in answer.content.items() if k in askable})
        return None

    @staticmethod
    def _can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
        capability = types.ClientCapabilities(elicitation=types.ElicitationCapability())
        return ctx.session.can_send_request and ctx.session.check_client_capability(capability)

    async def _run_job(
        self,
        ctx: ServerRequestContext[Any, Any],
        flwd: Flwd,
        job: JobDetail,
        args: dict[str, Any],
    ) -> types.CallToolResult:
        refused = await self._ask_missing(ctx, job, args)
        if refused is not None:
            return refused
        run = await flwd.start(job.id, args)
        progress = RunProgress(len(job.steps))

        async def report(event: Event) -> None:
            update = progress.update(event)
            if update is not None:
                await ctx.session.report_progress(*update)

        meta: dict[str, Any] = dict(ctx.meta or {})
        wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None
        try:
            final = await flwd.wait(run.run_id, report if wants_progress else None)
        except anyio.get_cancelled_exc_class():
            # the client cancelled the call (or went away): so is the run
            with anyio.CancelScope(shield=True), contextlib.suppress(FlwdError):
                await flwd.cancel(run.run_id)
            raise
        artifacts = await flwd.artifacts(run.run_id)
        outcome = run_outcome(final, artifacts, [flwd.artifact_url(a) for a in artifacts])
        tail = await flwd.logs(run.run_id, tail=LOG_TAIL)
        return finished_call(final, outcome, tail)

    async def _generic(self, flwd: Flwd, name: str, args: dict[str, Any]) -> types.CallToolResult:
        if name == naming.LIST_JOBS:
            jobs = await flwd.jobs()
            items = [
                {
                    "id": j.id,
                    "tool": naming.tool_name(j.id),
                    "title": j.title,
                    "description": j.description,
                }
                for j in jobs
            ]
            return structured({"jobs": items}, f"{len(items)} job(s)")
        if name == naming.LIST_RUNS:
            status = args.get("status")
            limit, offset = int(args.get("limit", 20)), int(args.get("offset", 0))
            if not (1 <= limit <= 100 and offset >= 0):
                return tool_error("invalid arguments: limit must be 1 to 100, offset >= 0")
            page = await flwd.runs(
                job_id=args.get("job_id"),
                status=RunStatus(status) if status else None,
                limit=limit,
                offset=offset,
            )
            return structured(page, f"{len(page.runs)} of {page.total} run(s)")
        run_id = str(args.get("run_id", ""))
        if name == naming.GET_RUN:
            detail = await flwd.run(run_id)
            return structured(detail, f"run {run_id}: {detail.status.value}")
        if name == naming.READ_LOG:
            since, size = _count(args, "since", 0), _count(args, "limit", 1)
            tail = _count(args, "tail", 1) if since is None and size is None else None
            lines = await flwd.logs(
                run_id,
                tail=tail or (50 if since is None and size is None else None),
                since=since,
                limit=size,
            )
            return structured({"lines": lines}, format_log(lines) or "(no lines)")
        if name == naming.CANCEL_RUN:
            cancelled = await flwd.cancel(run_id)
            return structured(cancelled, f"run {run_id}: {cancelled.status.value}")
        given = args.get("args")
        if given is not None and not isinstance(given, dict):
            return tool_error("invalid arguments: args must be an object")
        restarted = await flwd.restart(run_id, given)
        return structured(restarted, f"new run {restarted.run_id} of {restarted.job_id}")

    # -- resources ----------------------------------------------------------------------

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        self._remember(ctx)
        page = await self.flwd_for(ctx).runs(limit=20)
        resources = []
        for run in page.runs:
            resources.append(
                types.Resource(
                    uri=f"flwd://runs/{run.run_id}",
                    name=f"{run.job_id} {run.run_id}",
                    description=f"run of {run.job_id}: {run.status.value}",
                    mime_type="application/json",
                )
            )
        return types.ListResourcesResult(resources=resources)

    async def _list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template="flwd://runs/{run_id}",
                    name="run",
                    description="A run: status, arguments (secrets masked), steps, result",
                    mime_type="application/json",
                ),
                types.ResourceTemplate(
                    uri_template="flwd://runs/{run_id}/logs",
                    name="run log",
                    description=f"A run's log (its last {RESOURCE_LOG_LINES} lines)",
                    mime_type="text/plain",
                ),
            ]
        )

    @staticmethod
    def _parse(uri: str) -> tuple[str, bool]:
        match = _RUN_URI.match(uri)
        if match is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri}")
        return match["run_id"], match["logs"] is not None

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        self._remember(ctx)
        uri = str(params.uri)
        run_id, logs = self._parse(uri)
        flwd = self.flwd_for(ctx)
        try:
            if logs:
                lines = await flwd.logs(run_id, tail=RESOURCE_LOG_LINES)
                content = types.TextResourceContents(
                    uri=uri, mime_type="text/plain", text=format_log(lines)
                )
            else:
                detail = await flwd.run(run_id)
                content = types.TextResourceContents(
                    uri=uri,
                    mime_type="application/json",
                    text=_encode(builtins(detail)).decode(),
                )
        except FlwdError as exc:
            raise MCPError(types.INVALID_PARAMS, exc.detail) from None
        return types.ReadResourceResult(contents=[content])

    async def _subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self._remember(ctx)
        uri = str(params.uri)
        run_id, logs = self._parse(uri)
        key = connection_key(ctx)
        flwd = self.flwd_for(ctx)
        try:
            await flwd.run(run_id)  # refused here when the caller may not see it
        except FlwdError as exc:
            raise MCPError(types.INVALID_PARAMS, exc.detail) from None
        if key is None or (key, uri) in self._watches:
            return types.EmptyResult()
        task = asyncio.create_task(
            self._watch_run(flwd, ctx.session.send_resource_updated, uri, run_id, logs),
            name=f"flwd-mcp-watch-{uri}",
        )
        self._watches[(key, uri)] = task
        task.add_done_callback(lambda _: self._watches.pop((key, uri), None))
        return types.EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        key = connection_key(ctx)
        task = self._watches.pop((key or "", str(params.uri)), None)
        if task is not None:
            task.cancel()
        return types.EmptyResult()

    async def _listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """Serve a `subscriptions/listen` stream (2026-07-28). Of the resource URIs it asks
        for (the first `MAX_LISTENED_URIS`), those of runs the caller may see are honored
        and followed while the stream is open; any other is left out of the acknowledged
        filter."""
        flwd = self.flwd_for(ctx)
        asked = list(dict.fromkeys(params.notifications.resource_subscriptions or ()))
        honored = [uri for uri in asked[:MAX_LISTENED_URIS] if await self._may_follow(flwd, uri)]
        notifications = params.notifications.model_copy(
            update={"resource_subscriptions": honored or None}
        )
        for uri in honored:
            self._follow_for_listeners(flwd, uri)
        try:
            return await self.listen(
                ctx, params.model_copy(update={"notifications": notifications})
            )
        finally:
            for uri in honored:
                self._unfollow_for_listeners(uri)

    async def _may_follow(self, flwd: Flwd, uri: str) -> bool:
        """Whether `uri` is a run resource the caller may read."""
        try:
            run_id, _ = self._parse(uri)
            await flwd.run(run_id)
        except (MCPError, FlwdError):
            return False
        return True

    def _follow_for_listeners(self, flwd: Flwd, uri: str) -> None:
        task, streams = self._listened.get(uri, (None, 0))
        if task is None or task.done():
            run_id, logs = self._parse(uri)
            task = asyncio.create_task(
                self._watch_run(flwd, self._publish_updated, uri, run_id, logs),
                name=f"flwd-mcp-listened-{uri}",
            )
            streams = 0
        self._listened[uri] = (task, streams + 1)

    def _unfollow_for_listeners(self, uri: str) -> None:
        followed = self._listened.pop(uri, None)
        if followed is None:
            return
        task, streams = followed
        if streams > 1:
            self._listened[uri] = (task, streams - 1)
        else:
            task.cancel()

    async def _publish_updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))

    async def _watch_run(
        self,
        flwd: Flwd,
        updated: Callable[[str], Awaitable[object]],
        uri: str,
        run_id: str,
        logs: bool,
    ) -> None:
        """Call `updated(uri)` as the run changes (its log: at most every
        `LOG_UPDATE_INTERVAL` seconds while it writes), until it has ended."""
        loop = asyncio.get_running_loop()
        last = 0.0
        pending = False
        try:
            if (await flwd.run(run_id)).status in TERMINAL_RUN:
                return  # it will not change any more
            async for event in flwd.events(run_id):
                if _updates(event, logs):
                    now = loop.time()
                    final = event.type == "run.finished"
                    if logs and not final and now - last < LOG_UPDATE_INTERVAL:
                        pending = True
                        continue
                    last, pending = now, False
                    await updated(uri)
            if pending:
                await updated(uri)
        except (FlwdError, MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        except Exception:
            log.exception("following %s for a subscription failed", uri)


def _count(args: dict[str, Any], name: str, least: int) -> int | None:
    """An optional integer argument of at least `least` (at most 5000)."""
    value = args.get(name)
    if value is None:
        return None
    number = int(value)
    if not least <= number <= 5000:
        raise ValueError(f"{name} must be from {least} to 5000")
    return number


def _updates(event: Event, logs: bool) -> bool:
    """Whether `event` changes the run resource (or, with `logs`, its log)."""
    if logs:
        return event.type in ("run.output", "run.finished")
    return event.type != "run.output" or bool(
        event.data.get("status") in {s.value for s in TERMINAL_RUN}
    )
