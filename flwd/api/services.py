"""What the HTTP layer needs from the rest of flwd, as structural types.

The API is written against these protocols rather than the concrete classes so that its
contract with the engine and the job registry is explicit in one place. The default
factory builds the real `JobRegistry` and `RunService`; tests may pass another factory.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pluggy

from flwd.models import (
    Artifact,
    ContainmentInfo,
    Event,
    InvalidJob,
    JobSpec,
    LogLine,
    Run,
    Step,
)
from flwd.settings import Settings
from flwd.states import RunStatus


class CatalogView(Protocol):
    """The parts of `flwd.jobs.catalog.Catalog` the API reads."""

    def get(self, job_id: str) -> JobSpec: ...

    def list(self, *, namespace: str | None = None, source: str | None = None) -> list[JobSpec]: ...

    @property
    def invalid(self) -> Sequence[InvalidJob]: ...

    @property
    def version(self) -> int: ...


class JobRegistryView(Protocol):
    """The parts of `flwd.jobs.registry.JobRegistry` the API reads."""

    @property
    def catalog(self) -> CatalogView: ...

    @property
    def watching(self) -> bool: ...

    def source_info(self) -> list[dict[str, Any]]: ...

    async def wait_for_change(
        self, after_version: int, timeout: float | None = None
    ) -> CatalogView: ...


class RunServiceView(Protocol):
    """The parts of `flwd.engine.service.RunService` the API calls."""

    async def create_run(
        self,
        job_id: str,
        args: dict[str, Any] | None,
        *,
        tenant: str = "default",
        idempotency_key: str | None = None,
    ) -> Run: ...

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run: ...

    async def cancel_run(self, run_id: str) -> Run: ...

    async def restart_run(
        self,
        run_id: str,
        *,
        args: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run: ...

    async def get_run(self, run_id: str) -> Run: ...

    async def list_runs(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        tenant: str | None = None,
        q: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Run], int]: ...

    async def list_steps(self, run_id: str) -> list[Step]: ...

    async def list_artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Artifact], int]: ...

    async def get_artifact(self, artifact_id: str) -> tuple[Artifact, pathlib.Path]: ...

    async def read_logs(
        self,
        run_id: str,
        *,
        since_id: int | None = None,
        since_time: datetime | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogLine]: ...

    async def count_logs(self, run_id: str) -> int: ...

    async def log_position(self, run_id: str, moment: datetime) -> int: ...

    def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
    ) -> AsyncIterator[Event]: ...

    async def healthy(self) -> bool: ...

    async def check_resume(
        self, since: int | None, *, run_id: str | None = None, job_id: str | None = None
    ) -> None:
        """Raise `flwd.errors.EventsPruned` if resuming after `since` would skip events
        retention deleted."""

    def containment_info(self) -> ContainmentInfo: ...


class EventFeedView(Protocol):
    """What the SSE endpoints read: `flwd.events.feed.EventFeed`. Events come in batches
    (each written to the client in one send); otherwise as `RunServiceView.follow`."""

    def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
        on_overflow: Callable[[], None] | None = None,
    ) -> AsyncIterator[list[Event]]: ...


class OneByOne:
    """An `EventFeedView` over `RunServiceView.follow`: batches of one event, for run
    services that have no batched feed of their own (the HTTP layer's test doubles)."""

    def __init__(self, runs: RunServiceView) -> None:
        self.runs = runs

    async def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
        on_overflow: Callable[[], None] | None = None,
    ) -> AsyncIterator[list[Event]]:
        stream = self.runs.follow(
            since=since, run_id=run_id, job_id=job_id, until_terminal=until_terminal
        )
        try:
            async for event in stream:
                yield [event]
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


@dataclass(frozen=True)
class ApiServices:
    """The live services behind the API, created by the app's lifespan. `feed` defaults
    to `OneByOne(runs)`."""

    registry: JobRegistryView
    runs: RunServiceView
    feed: EventFeedView | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def events(self) -> EventFeedView:
        return self.feed if self.feed is not None else OneByOne(self.runs)


ServicesFactory = Callable[
    [Settings, pluggy.PluginManager], contextlib.AbstractAsyncContextManager[ApiServices]
]


@contextlib.asynccontextmanager
async def default_services(
    settings: Settings, pm: pluggy.PluginManager
) -> AsyncIterator[ApiServices]:
    """The real registry (watching job sources) and run service (store, scheduler)."""
    # Imported here: the engine pulls in storage and process management, which
    # `flwd openapi` and the unit tests of the HTTP layer do not need.
    from flwd.engine.service import RunService
    from flwd.jobs.registry import JobRegistry

    async with (
        JobRegistry(settings, pm) as registry,
        RunService(settings, registry, pm) as runs,
    ):
        yield ApiServices(registry=registry, runs=runs, feed=runs.feed)
