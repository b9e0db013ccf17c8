"""A test-only plugin implementing every hook, recording each call (hook name and its
key arguments) as a JSON line in the file named by `FLWD_TEST_HOOK_LOG`.

Loaded into a real `flwd serve` (and the CLI) by `FLWD_PLUGINS=tests.plugins.recorder`.
It answers `None` to the `firstresult` hooks, so the built-in defaults still decide,
except `resolve_profile`, whose answer must reach `prepare_step` as `context.profile`.
A job whose id is `rejected` is refused by `validate_job`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from litestar import get

from flwd.access import VIEW_SYSTEM, Actor, Resource
from flwd.api.access import route_action
from flwd.hookspecs import hookimpl

LOG_ENV = "FLWD_TEST_HOOK_LOG"
PROFILE = {"name": "recorded-profile"}
REJECTED_JOB = "rejected"


def record(hook: str, **fields: Any) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps({"hook": hook, **fields}, default=str) + "\n")


@click.command("recorder-hello")
def recorder_hello() -> None:
    """Say hello (added by the test recorder plugin)."""
    click.echo("hello from the recorder")


@get("/recorder/ping", opt=route_action(VIEW_SYSTEM), sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"pong": "yes"}


@hookimpl
def register_commands(cli: click.Group) -> None:
    record("register_commands", group=cli.name)
    cli.add_command(recorder_hello)


@hookimpl
def register_source_types() -> list[Any]:
    record("register_source_types")
    return []


@hookimpl
def validate_job(job: Any, settings: Any) -> list[str]:
    record("validate_job", job_id=job.id, settings=type(settings).__name__)
    return ["rejected by the recorder plugin"] if job.id == REJECTED_JOB else []


@hookimpl
def actor_from_request(connection: Any) -> Any:
    record("actor_from_request", path=connection.scope["path"], method=connection.method)
    return None


@hookimpl
def permission_allowed(actor: Actor | None, action: str, resource: Resource) -> bool | None:
    record(
        "permission_allowed",
        actor=None if actor is None else actor.id,
        action=action,
        kind=resource.kind,
        job_id=resource.job_id,
        run_id=resource.run_id,
        tenant=resource.tenant,
    )
    return None


@hookimpl
def resolve_profile(job: Any, settings: Any) -> Any:
    record("resolve_profile", job_id=job.id, settings=type(settings).__name__)
    return PROFILE


@hookimpl
def resolve_executor(context: Any) -> Any:
    record(
        "resolve_executor",
        run_id=context.run.run_id,
        step_id=context.step.id,
        profile=context.profile,
        # prepare_step has run before: the argv it wrapped is what the executor gets
        argv=context.argv,
    )
    return None


@hookimpl
def prepare_step(context: Any) -> None:
    record(
        "prepare_step",
        run_id=context.run.run_id,
        job_id=context.job.id,
        step_id=context.step.id,
        attempt=context.attempt,
        profile=context.profile,
    )
    context.env["RECORDER_MARK"] = "prepared"


@hookimpl
def run_event(event: Any) -> None:
    record("run_event", id=event.id, type=event.type, run_id=event.run_id)


@hookimpl
def register_routes(settings: Any) -> list[Any]:
    record("register_routes", settings=type(settings).__name__)
    return [ping]


@hookimpl
def configure_app(config: Any, settings: Any) -> None:
    record(
        "configure_app",
        config=type(config).__name__,
        settings=type(settings).__name__,
        middleware=[type(m).__name__ for m in config.middleware],
    )


@hookimpl
def startup(settings: Any) -> None:
    record("startup", settings=type(settings).__name__)


@hookimpl
def shutdown(settings: Any) -> None:
    record("shutdown", settings=type(settings).__name__)
