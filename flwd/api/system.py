"""`/api/v1/health`, `/api/v1/ready` and `/api/v1/system/info`."""

from __future__ import annotations

import time

from litestar import Controller, get

from flwd import __version__
from flwd.api.deps import AppSettings, Plugins, Services
from flwd.api.openapi import ExampleOperation
from flwd.api.problems import ProblemError, problem_responses
from flwd.api.schemas import Health, Ready, SourceInfo, SystemInfo
from flwd.plugins import extension_names


class SystemController(Controller):
    tags = ["system"]

    @get(
        "/health",
        operation_id="health",
        operation_class=ExampleOperation,
        responses=problem_responses(500),
    )
    async def health(self, services: Services) -> Health:
        """Liveness: the process answers. `status` is `degraded` when the store is not usable."""
        status = "healthy" if await services.runs.healthy() else "degraded"
        uptime = int(time.monotonic() - services.started)
        return Health(status=status, version=__version__, uptime_seconds=uptime)

    @get(
        "/ready",
        operation_id="ready",
        operation_class=ExampleOperation,
        responses=problem_responses(503),
    )
    async def ready(self, services: Services, settings: AppSettings) -> Ready:
        """Readiness: the store is usable and, when watching is on, the job watcher runs."""
        store = await services.runs.healthy()
        watcher = services.registry.watching or not settings.watch
        if not (store and watcher):
            broken = [name for name, ok in (("store", store), ("job watcher", watcher)) if not ok]
            raise ProblemError("not-ready", "Not usable yet: " + ", ".join(broken))
        return Ready(status="ready", store=store, watcher=services.registry.watching)

    @get(
        "/system/info",
        operation_id="systemInfo",
        operation_class=ExampleOperation,
        responses=problem_responses(500),
    )
    async def info(self, services: Services, plugin_manager: Plugins) -> SystemInfo:
        """Version, configured job sources, installed extensions and how runs' processes
        are contained."""
        sources = [
            SourceInfo(name=str(s["name"]), type=str(s["type"]), path=str(s["path"]))
            for s in services.registry.source_info()
        ]
        return SystemInfo(
            version=__version__,
            sources=sources,
            extensions=extension_names(plugin_manager),
            containment=services.runs.containment_info(),
        )
