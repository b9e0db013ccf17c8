"""`flwd.api.access`: every route declares its action, a route that does not fails
closed, a mounted app is covered, and `configure_app` sees the configuration first."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, asgi, get
from litestar.config.app import AppConfig
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send

from flwd.access import ACTIONS, ADMINISTER, Actor, Resource
from flwd.api.access import OPEN, action_of, actor_of, route_action
from flwd.api.events import _seen_by
from flwd.api.schemas import JobsChanged
from flwd.app import create_app
from flwd.hookspecs import hookimpl
from flwd.models import utcnow
from flwd.plugins import installed_extensions, make_plugin_manager
from flwd.settings import Settings
from tests.api_support import FakeRunService, fake_services_factory

#: The routes anyone may call, declared open on purpose.
OPEN_PATHS = {"/", "/api/v1/health", "/api/v1/ready"}
DOCS = "/api/docs"


def _handlers(app: Litestar) -> list[tuple[str, Any]]:
    found = []
    for route in app.routes:
        handlers = getattr(route, "route_handlers", None) or [route.route_handler]  # type: ignore[union-attr]
        found += [(route.path, handler) for handler in handlers]
    return found


def test_every_route_declares_its_action() -> None:
    app = create_app(Settings(), make_plugin_manager(load_entrypoints=False))
    opened = set()
    for path, handler in _handlers(app):
        methods = getattr(handler, "http_methods", set())
        if methods == {"OPTIONS"} and "action" not in handler.opt:
            continue  # Litestar's own `Allow` answers
        action = handler.opt.get("action")
        assert action in (*ACTIONS, OPEN), f"{sorted(methods)} {path} declares no action"
        if action == OPEN:
            opened.add(path)
    # exactly the documented open routes: health, readiness, `/`, the docs and the schema
    assert {p for p in opened if not p.startswith(DOCS)} == OPEN_PATHS
    assert {f"{DOCS}/openapi.json", DOCS} <= opened


def test_a_handler_without_a_declaration_needs_administer() -> None:
    @get("/x", sync_to_thread=False)
    def undeclared() -> None: ...

    @get("/y", sync_to_thread=False, opt=route_action("view-runs"))
    def declared() -> None: ...

    assert action_of(undeclared) == ADMINISTER
    assert action_of(declared) == "view-runs"


class Gatekeeper:
    """Denies `administer` to everyone; names the caller from `X-Who`; adds a route and a
    mounted app through `register_routes`, neither declaring an action."""

    def __init__(self) -> None:
        self.configured: list[tuple[AppConfig, Settings]] = []
        self.checks: list[tuple[str | None, str, Resource]] = []

    @hookimpl
    def actor_from_request(self, connection: Any) -> Actor | None:
        who = connection.headers.get("x-who")
        return Actor(id=who, name=who) if who else None

    @hookimpl
    def permission_allowed(self, actor: Actor | None, action: str, resource: Resource) -> bool:
        self.checks.append((actor.id if actor else None, action, resource))
        return action != ADMINISTER

    @hookimpl
    def configure_app(self, config: AppConfig, settings: Settings) -> None:
        self.configured.append((config, settings))

        @get("/whoami", sync_to_thread=False, opt=route_action("view-system"))
        def whoami(request: Request[Any, Any, Any]) -> dict[str, str | None]:
            actor = actor_of(request)
            return {"id": actor.id if actor else None}

        config.route_handlers.append(whoami)

    @hookimpl
    def register_routes(self, settings: Settings) -> list[Any]:
        @get("/undeclared", sync_to_thread=False)
        def undeclared() -> str:
            return "reached"

        @asgi("/mounted", is_mount=True, copy_scope=True)
        async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"mounted"})

        return [undeclared, mounted]


async def test_undeclared_routes_and_mounts_fail_closed(api_service: FakeRunService) -> None:
    plugin = Gatekeeper()
    settings = Settings(watch=False)
    app = create_app(
        settings,
        make_plugin_manager(load_entrypoints=False, extra=[plugin]),
        services_factory=fake_services_factory(api_service),
    )
    (configured,) = plugin.configured
    assert configured[1] is settings and isinstance(configured[0], AppConfig)
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        for path in ("/api/v1/undeclared", "/api/v1/mounted", "/api/v1/mounted/deeper"):
            refused = await client.get(path, headers={"X-Who": "carol"})
            assert refused.status_code == 403, path
            assert refused.json()["type"].endswith("/permission-denied")
        # a route added by configure_app is served, behind the same access control, and
        # its handler reads the actor the plugin named
        who = await client.get("/whoami", headers={"X-Who": "carol"})
        assert who.json() == {"id": "carol"}
        assert (await client.get("/api/v1/jobs")).status_code == 200
        assert (await client.get("/api/v1/health")).status_code == 200
    assert ("carol", ADMINISTER, Resource(kind="system")) in plugin.checks
    assert ("carol", "view-system", Resource(kind="system")) in plugin.checks
    assert (None, "view-jobs", Resource(kind="system")) in plugin.checks
    assert not [c for c in plugin.checks if c[1] == "open"]


def test_a_job_change_is_reduced_to_the_jobs_an_actor_sees() -> None:
    change = JobsChanged(
        timestamp=utcnow(),
        added=["demo/a", "hello"],
        changed=["backup/x"],
        removed=["demo/b"],
        invalid=["hello"],
    )
    actor = Actor(id="d", name="d", job_patterns=("demo/*",))
    seen = _seen_by(change, actor)
    assert seen is not None
    assert (seen.added, seen.changed, seen.removed, seen.invalid) == (
        ["demo/a"],
        [],
        ["demo/b"],
        [],
    )
    assert _seen_by(change, Actor(id="n", name="n", job_patterns=("nothing/*",))) is None


def test_serve_refuses_a_public_address_without_an_authenticating_plugin() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FLWD_PLUGINS", "FLWD_HOST")}
    # whatever is installed here, with every extension disabled nobody authenticates
    env["FLWD_DISABLE_EXTENSIONS"] = ",".join(installed_extensions())
    result = subprocess.run(
        [sys.executable, "-m", "flwd", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: refusing to serve on 0.0.0.0: no installed extension")


def _example_plugin() -> types.ModuleType:
    """The example access plugin of docs/plugins.md, as a module."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    after = text.split("<!-- example: static-tokens -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("static_tokens_example")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    return module


async def test_the_documented_example_plugin_works(api_service: FakeRunService) -> None:
    app = create_app(
        Settings(watch=False),
        make_plugin_manager(load_entrypoints=False, extra=[_example_plugin()]),
        services_factory=fake_services_factory(api_service),
    )
    acme = {"Authorization": "Bearer acme-token"}
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        assert (await client.get("/api/v1/health")).status_code == 200
        assert (await client.get("/api/v1/jobs")).status_code == 403
        unknown = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
        jobs = (await client.get("/api/v1/jobs", headers=acme)).json()
        assert [j["id"] for j in jobs["jobs"]] == ["backup/daily", "backup/weekly"]
        created = await client.post("/api/v1/runs", json={"job_id": "backup/weekly"}, headers=acme)
        assert created.status_code == 201 and created.json()["tenant"] == "acme"
        hello = await client.post("/api/v1/runs", json={"job_id": "hello"}, headers=acme)
        assert hello.status_code == 404
        ops = {"Authorization": "Bearer ops-token"}
        other = await client.post("/api/v1/runs", json={"job_id": "hello"}, headers=ops)
        assert other.status_code == 201 and other.json()["tenant"] == "default"
        hidden = await client.get(f"/api/v1/runs/{other.json()['run_id']}", headers=acme)
        assert hidden.status_code == 404
        assert hidden.json()["type"].endswith("/run-not-found")
        listed = (await client.get("/api/v1/runs", headers=acme)).json()
        assert [r["job_id"] for r in listed["runs"]] == ["backup/weekly"]
        assert listed["total"] == 1
        assert (await client.get("/api/v1/runs", headers=ops)).json()["total"] == 2
