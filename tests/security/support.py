"""A small Litestar app carrying the extension as the core wires it (its `configure_app`,
`register_routes`, `startup` and `shutdown`), for unit tests that need no `flwd serve`.
The refusals themselves (401/403) come from the core's access middleware, which the
end-to-end tests (test_e2e_security.py) exercise through a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwd_security import plugin
from litestar import Litestar, Response, Router, get, post
from litestar.config.app import AppConfig
from litestar.openapi import OpenAPIConfig

from flwd.access import VIEW_JOBS
from flwd.api.problems import EXCEPTION_HANDLERS
from flwd.settings import Settings


@get("/things", opt={"action": VIEW_JOBS}, sync_to_thread=False)
def things() -> dict[str, bool]:
    return {"ok": True}


@get("/health", opt={"action": "open"}, sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@post("/runs", operation_id="createRun", sync_to_thread=False)
def create_run() -> Response[dict[str, str]]:
    return Response({"run_id": "r-1"}, status_code=201, headers={"Location": "/api/v1/runs/r-1"})


def settings_for(tmp_path: Path, profile: str = "secure", **more: Any) -> Settings:
    return Settings(
        profile=profile,
        data_dir=str(tmp_path / "data"),
        profiles_dir=str(tmp_path / "profiles"),
        **more,
    )


def security_app(settings: Settings) -> Litestar:
    routes: list[Any] = [*plugin.register_routes(settings), things, health, create_run]
    config = AppConfig(
        route_handlers=[Router("/api/v1", route_handlers=routes)],
        openapi_config=OpenAPIConfig(title="t", version="1"),
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=64 * 1024,
        on_startup=[lambda: plugin.startup(settings)],
        on_shutdown=[lambda: plugin.shutdown(settings)],
    )
    plugin.configure_app(config, settings)
    return Litestar.from_config(config)


def admin_token(settings: Settings) -> str:
    return (settings.data_path / "admin-token").read_text().strip()
