"""Cost of the core's access control per request, in process (not run by CI).

    .venv/bin/python bench/access.py [--requests 3000] [--rounds 5]

Sends `GET /api/v1/jobs` (a `view-jobs` route with a cheap handler, so the middleware's
share is as large as it gets) through the whole ASGI application, with the real registry
and store on a temporary data dir, for three plugin sets, alternating in rounds so that
other load on the machine hits all alike:

- `none`: no access plugin (only the built-in default: no hook call per request);
- `trivial`: a plugin whose `actor_from_request` returns one fixed actor and whose
  `permission_allowed` answers `None` (the hooks' own cost);
- `confined`: the same actor confined to a tenant and a job pattern (the listing
  filtered by it).

`--direct` then times `AccessControl.handle` alone (a minimal HTTP scope, a next app that
does nothing), which is the middleware's own cost without the rest of the request.

Prints the median CPU microseconds (this process's CPU time, which other load on the
machine disturbs far less than wall time) per request of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from litestar import get
from litestar.testing import AsyncTestClient

from flwd.access import VIEW_JOBS, Actor, Resource
from flwd.api.access import AccessControl, route_action
from flwd.app import create_app
from flwd.hookspecs import hookimpl
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings


class Fixed:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    @hookimpl
    def actor_from_request(self, connection: Any) -> Actor:
        return self.actor

    @hookimpl
    def permission_allowed(self, actor: Actor | None, action: str, resource: Resource) -> None:
        return None


PLUGINS: dict[str, list[object]] = {
    "none": [],
    "trivial": [Fixed(Actor(id="a", name="a"))],
    "confined": [Fixed(Actor(id="a", name="a", tenant="t", job_patterns=("demo/*",)))],
}


async def measure(tmp: Path, requests: int, rounds: int) -> dict[str, float]:
    jobs = tmp / "jobs"
    for i in range(20):
        (jobs / f"demo/j{i}").mkdir(parents=True)
        (jobs / f"demo/j{i}" / "config.yaml").write_text('{"command": "true"}')
    clients = {}
    for name, extra in PLUGINS.items():
        settings = Settings(
            sources=(JobSource(name="local-fs", path=str(jobs)),),
            data_dir=str(tmp / f"data-{name}"),
            watch=False,
        )
        app = create_app(settings, make_plugin_manager(load_entrypoints=False, extra=extra))
        clients[name] = AsyncTestClient(app=app, base_url="http://127.0.0.1")
    per_request: dict[str, list[float]] = {name: [] for name in PLUGINS}
    try:
        for client in clients.values():
            await client.__aenter__()
        names = list(clients)
        for round_ in range(rounds):
            # a different one first in each round: none is always measured last
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                client = clients[name]
                started = time.process_time()
                for _ in range(requests):
                    response = await client.get("/api/v1/jobs")
                    assert response.status_code == 200
                per_request[name].append((time.process_time() - started) / requests * 1e6)
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    return {name: round(statistics.median(values), 1) for name, values in per_request.items()}


async def direct(calls: int, rounds: int) -> dict[str, float]:
    """Microseconds per `AccessControl.handle` call, per plugin set."""

    @get("/api/v1/jobs", opt=route_action(VIEW_JOBS), sync_to_thread=False)
    def handler() -> None: ...

    async def next_app(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    middlewares = {
        name: AccessControl(make_plugin_manager(load_entrypoints=False, extra=extra))
        for name, extra in PLUGINS.items()
    }
    per_call: dict[str, list[float]] = {name: [] for name in PLUGINS}
    names = list(middlewares)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            middleware = middlewares[name]
            started = time.process_time()
            for _ in range(calls):
                scope: Any = {
                    "type": "http",
                    "method": "GET",
                    "path": "/api/v1/jobs",
                    "headers": [(b"host", b"127.0.0.1")],
                    "query_string": b"",
                    "route_handler": handler,
                    "state": {},
                }
                await middleware.handle(scope, receive, send, next_app)
            per_call[name].append((time.process_time() - started) / calls * 1e6)
    return {name: round(statistics.median(values), 2) for name, values in per_call.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--direct", action="store_true", help="also time the middleware alone")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-access-") as tmp:
        result: dict[str, Any] = {
            "cpu_us_per_request": asyncio.run(measure(Path(tmp), opts.requests, opts.rounds))
        }
    if opts.direct:
        result["cpu_us_per_middleware_call"] = asyncio.run(direct(100_000, opts.rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
