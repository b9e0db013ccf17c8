"""`RunQueries`: what can be read about runs, their steps, logs, events and artifacts.

The read side of `flwd.engine.service.RunService`, which inherits it; it needs only the
store, the journal and its feed, so it answers on a read-only data dir as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from flwd.errors import ArtifactNotFound, EventsPruned, RunNotFound
from flwd.events.feed import EventFeed
from flwd.events.journal import Journal
from flwd.models import Artifact, Event, LogLine, Run, Step
from flwd.states import TERMINAL_RUN, RunStatus
from flwd.storage import retention
from flwd.storage.runs import RunRepository
from flwd.storage.store import Store


class RunQueries:
    """Reading runs: the same answers whether or not this process executes them."""

    store: Store
    journal: Journal
    feed: EventFeed
    repo: RunRepository
    #: where artifacts' contents are stored, by digest
    blob_root: Path

    # -- runs -----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        run = await self.repo.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

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
    ) -> tuple[list[Run], int]:
        return await self.repo.page(
            job_id=job_id,
            status=status,
            tenant=tenant,
            q=q,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            offset=offset,
        )

    async def list_steps(self, run_id: str) -> list[Step]:
        await self.get_run(run_id)
        return await self.repo.steps(run_id)

    async def check_resume(
        self, since: int | None, *, run_id: str | None = None, job_id: str | None = None
    ) -> None:
        """Raise `EventsPruned` when a stream resuming after `since` would miss events
        that retention deleted: some pruned event of the stream (any run's, or `job_id`'s
        runs') has an id above `since`. A stream of one run needs no check: a run that
        still exists has all its events (a pruned one answers `RunNotFound`)."""
        if since is None or run_id is not None:
            return
        through = await retention.pruned_through(self.store, job_id)
        if since < through:
            raise EventsPruned(since, through)

    # -- artifacts, logs, events ----------------------------------------------------------

    async def list_artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Artifact], int]:
        return await self.repo.artifacts(run_id=run_id, limit=limit, offset=offset)

    async def get_artifact(self, artifact_id: str) -> tuple[Artifact, Path]:
        artifact = await self.repo.artifact(artifact_id)
        if artifact is None:
            raise ArtifactNotFound(artifact_id)
        path = self.blob_root / artifact.sha256[:2] / artifact.sha256
        if not path.is_file():
            raise ArtifactNotFound(artifact_id)
        return artifact, path

    async def read_logs(
        self,
        run_id: str,
        *,
        since_id: int | None = None,
        since_time: datetime | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogLine]:
        """The run's log lines after event id `since_id` (or stamped after `since_time`),
        the first `limit` of them; or, with `tail`, its last `tail` lines. Read a few
        chunks at a time, never the whole log at once unless all of it is asked for."""
        await self.get_run(run_id)
        after = since_id or 0
        if tail is not None:
            after = await self.journal.tail_position(run_id, tail)
            limit = tail if limit is None else min(limit, tail)
        elif since_time is not None:
            after = max(after, await self.journal.time_position(run_id, since_time))
        return await self.journal.read_logs(run_id, since_id=after, limit=limit)

    async def count_logs(self, run_id: str) -> int:
        """How many log lines of the run are stored."""
        return await self.journal.count_logs(run_id)

    async def log_position(self, run_id: str, moment: datetime) -> int:
        """The event id after which the run's events stamped after `moment` start."""
        return await self.journal.time_position(run_id, moment)

    async def run_ended(self, run_id: str) -> bool:
        run = await self.repo.get(run_id)
        return run is None or run.status in TERMINAL_RUN

    async def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
    ) -> AsyncIterator[Event]:
        """Stored events after `since` then live ones, each once, one at a time (the
        events of `self.feed`'s batches; see `EventFeed.follow`). May raise
        `flwd.events.bus.SlowConsumer` mid-stream: end it, the client resumes."""
        batches = self.feed.follow(
            since=since, run_id=run_id, job_id=job_id, until_terminal=until_terminal
        )
        async for batch in batches:
            for event in batch:
                yield event
