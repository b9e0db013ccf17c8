"""Every extension point of flwd, grouped by phase. Each spec's docstring is its contract.

Naming: `register_*` hooks return lists that are concatenated; `resolve_*` hooks are
firstresult (the first non-None answer wins, defaults are registered `trylast`); past-tense
or event names (`run_event`, `startup`, `shutdown`) are notifications whose return value
is ignored.

An extension is a module or object with functions decorated by `flwd.hookspecs.hookimpl`
(`from flwd.hookspecs import hookimpl`), found through the `flwd` entry-point group (see
docs/plugins.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection

    from flwd.access import Actor, Resource
    from flwd.jobs.sources import SourceType
    from flwd.models import Event, JobSpec
    from flwd.settings import Settings

hookspec = pluggy.HookspecMarker("flwd")
hookimpl = pluggy.HookimplMarker("flwd")


# -- command line -------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `flwd` command group (`cli.command()` / `cli.add_command()`).

    Called once when the CLI is built, before arguments are parsed. Built-in commands are
    registered through this hook too, so an extension may add a new group of commands.
    """


# -- job discovery ------------------------------------------------------------------------


@hookspec
def register_source_types() -> list[SourceType]:
    """Return the kinds of job source this plugin can scan and watch.

    A `SourceType` (`flwd.jobs.sources`) has a `type` name (the built-in one is `fs`) and
    an `open(source)` method returning an `OpenSource`, which scans the configured source
    into jobs and invalid job folders (`scan`) and reports changes (`watch`). When two
    plugins provide the same `type`, the one registered last wins (the built-in `fs` is
    `trylast`, so an extension can replace it). A source whose `type` no plugin provides
    is reported at start-up, never silently ignored.
    """


@hookspec
def validate_job(job: JobSpec, settings: Settings) -> list[str]:
    """Return problems that make a loaded job unable to run on this server (each one line,
    for people), or an empty list.

    Called for every job the catalogue loads (at start-up, on hot reload, by `flwd
    validate`). A job with a problem is served as an invalid job folder, with the problems
    as its diagnostics, exactly as if its `config.yaml` were broken. Must be pure and quick.
    """


# -- access -------------------------------------------------------------------------------


@hookspec(firstresult=True)
def actor_from_request(connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    """Identify the caller of a request: return a `flwd.access.Actor`, or `None` if this
    plugin cannot tell (the next one is asked; if none can, the caller is anonymous).

    Called once per HTTP request and per stream (the API, event streams, every mounted
    app), before routing and before `permission_allowed`. May return an awaitable (a token
    looked up in a store). Raising `flwd.errors.Unauthorized` refuses the request with a
    401 problem (a malformed, unknown, expired or revoked credential).
    """


@hookspec(firstresult=True)
def permission_allowed(actor: Actor | None, action: str, resource: Resource) -> bool | None:
    """Decide whether `actor` (`None`: anonymous) may perform `action` on `resource`.

    `action` is one of `flwd.access.ACTIONS`; `resource` a `flwd.access.Resource`. Return
    `True` or `False` to decide, `None` to leave the decision to the next plugin. The
    built-in default, registered `trylast`, allows everything. Called on the event loop for
    every request and for every job an MCP client may see: must not block or do I/O.
    """


# -- execution ----------------------------------------------------------------------------


@hookspec(firstresult=True)
def resolve_profile(job: JobSpec, settings: Settings) -> Any:
    """Return the execution profile of a run of `job` (an object the plugin defines and
    its `prepare_step` reads from `context.profile`), or `None` to leave it to the next
    plugin. With no answer a run has no profile (`context.profile` is `None`). Called once
    per run, on the event loop, before its first step.
    """


@hookspec(firstresult=True)
def resolve_executor(context: Any) -> Any:
    """Return the executor that runs this step (an object following
    `flwd.engine.step_process.StepExecutor`), or `None` to leave it to the next plugin. The
    built-in local process executor is registered `trylast`. `context` is the step's
    `StepContext` after every `prepare_step` has run.
    """


@hookspec
def prepare_step(context: Any) -> None:
    """Adjust a step just before it is executed.

    `context` is a `flwd.engine.step_process.StepContext` with mutable `argv` (list) and `env`
    (dict) plus read-only `run`, `job`, `step` and `settings`. Implementations may wrap the
    argv (for example to add resource limits) or filter the environment. They must not
    block: this runs on the event loop for every step.
    """


@hookspec
def run_event(event: Event) -> None:
    """Be told of every journal event after it is stored, in id order.

    Called on the event loop after the event has been committed; must return quickly
    (queue slow work such as webhooks). Exceptions are logged and do not affect the run.
    """


# -- server lifecycle ---------------------------------------------------------------------


@hookspec
def register_routes(settings: Settings) -> list[Any]:
    """Return Litestar route handlers or routers to mount on the API application.

    They are mounted under `/api/v1` next to the built-in controllers, share their
    dependencies (`runs`, `feed`, `registry`, `services`, `settings`, `plugin_manager`) and have
    their errors answered as problem details by `flwd.api.problems`.
    """


@hookspec
def configure_app(config: AppConfig, settings: Settings) -> None:
    """Change the API application's configuration before it is built: add middleware
    (`config.middleware`, which covers every route and every mounted app), guards, Litestar
    plugins, route handlers, `before_send` hooks, OpenAPI security schemes ... Called once
    per server, in plugin order, after the built-in configuration is in place.
    """


@hookspec
def startup(settings: Settings) -> None:
    """Be told the server has started and its store and catalog are usable."""


@hookspec
def shutdown(settings: Settings) -> None:
    """Be told the server is stopping; release what `startup` acquired."""
