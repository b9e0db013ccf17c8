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

    from flwd.jobs.sources import SourceType
    from flwd.models import Event
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


# -- execution ----------------------------------------------------------------------------


@hookspec
def prepare_step(context: Any) -> None:
    """Adjust a step just before it is executed.

    `context` is a `flwd.engine.executor.StepContext` with mutable `argv` (list) and `env`
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
    dependencies (`runs`, `feed`, `registry`, `backend`, `settings`, `plugin_manager`) and have
    their errors answered as problem details by `flwd.api.problems`.
    """


@hookspec
def startup(settings: Settings) -> None:
    """Be told the server has started and its store and catalog are usable."""


@hookspec
def shutdown(settings: Settings) -> None:
    """Be told the server is stopping; release what `startup` acquired."""
