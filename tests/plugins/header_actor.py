"""A test-only access plugin: the caller is whoever the `X-Test-Actor` header says.

`X-Test-Actor: ID[;tenant=T][;jobs=P1,P2][;deny=A1,A2][;deny-run=A3]` names an actor
confined to tenant T and the job patterns P1, P2, denied the actions A1, A2 everywhere and
A3 on a specific run (not on the route as a whole); `bad` is refused as
an unknown credential; no header is an anonymous caller (allowed everything). Loaded into
a real `flwd serve` by the `FLWD_PLUGINS` environment variable; never installed.
"""

from __future__ import annotations

from typing import Any

from flwd.access import Actor, Resource
from flwd.errors import Unauthorized
from flwd.hookspecs import hookimpl

HEADER = "x-test-actor"


def parse_actor(value: str) -> Actor:
    actor_id, *fields = value.split(";")
    options = dict(field.partition("=")[::2] for field in fields)
    jobs = options.get("jobs")
    return Actor(
        id=actor_id,
        name=actor_id,
        tenant=options.get("tenant"),
        job_patterns=tuple(jobs.split(",")) if jobs is not None else None,
        attributes={"deny": options.get("deny", ""), "deny-run": options.get("deny-run", "")},
    )


@hookimpl
def actor_from_request(connection: Any) -> Any:
    value = connection.headers.get(HEADER)
    if value is None:
        return None
    if value == "bad":
        raise Unauthorized("The test credential is not valid")

    async def lookup() -> Actor:  # an awaitable answer, as a token store would give
        return parse_actor(value)

    return lookup()


@hookimpl
def permission_allowed(actor: Actor | None, action: str, resource: Resource) -> bool | None:
    if actor is None:
        return None
    if action in actor.attributes["deny"].split(","):
        return False
    if resource.kind == "run" and action in actor.attributes["deny-run"].split(","):
        return False
    return None
