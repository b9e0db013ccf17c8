"""`RunService`: the engine's one public face, used by the API, the CLI and extensions.

It owns the store, the journal and bus, the scheduler and the runs this process executes.
Only one engine may use a data dir at a time (an exclusive lock file), because event ids
and run slots are allocated in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pluggy
from ulid import ULID

from flwd.engine.containment import SUBREAPER, Containment
from flwd.engine.output import Redactor
from flwd.engine.processes import adopt_orphans
from flwd.engine.recovery import clean_work_root, recover_lost_runs, repair_unended_steps
from flwd.engine.retention import Pruner, PruneReport, job_retention
from flwd.engine.runner import ActiveRun, RunExecutor
from flwd.engine.scheduler import Scheduler, concurrency_key
from flwd.errors import (
    ArtifactNotFound,
    EventsPruned,
    FlwdError,
    IdempotencyKeyReused,
    JobNotFound,
    RunNotCancellable,
    RunNotFound,
)
from flwd.events.bus import EventBus
from flwd.events.feed import IDLE_RECHECK, EventFeed
from flwd.events.journal import Journal
from flwd.events.records import Record
from flwd.jobs.arguments import (
    mask_secrets,
    secret_items,
    secret_values,
    validate_args,
    without_secrets,
)
from flwd.jobs.registry import JobRegistry
from flwd.models import (
    Artifact,
    ContainmentInfo,
    Event,
    JobSpec,
    LogLine,
    RetentionSpec,
    Run,
    Step,
    utcnow,
)
from flwd.settings import Settings
from flwd.states import TERMINAL_RUN, FailureReason, RunStatus
from flwd.storage import retention
from flwd.storage import runs as rows
from flwd.storage.private import PRIVATE_FILE, make_private_dir, narrow
from flwd.storage.runs import RunRepository
from flwd.storage.store import Store

log = logging.getLogger(__name__)


class DataDirBusy(FlwdError):
    """Another flwd engine (a server, or a local `flwd run`) is using this data dir."""


def lock_data_dir(settings: Settings) -> int:
    """Take the data dir's engine lock (held while the returned descriptor is open), or
    raise `DataDirBusy`: one engine — a server or a local `flwd run` — per data dir."""
    make_private_dir(settings.data_path)
    lock = settings.data_path / "engine.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    narrow(lock, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"another flwd process is using the data dir {settings.data_dir}; "
            "stop it, use another --data-dir, or talk to the server with --server URL"
        ) from None
    return fd


class RunService:
    def __init__(
        self,
        settings: Settings,
        registry: JobRegistry | None,
        pm: pluggy.PluginManager,
        *,
        readonly: bool = False,
    ) -> None:
        """`readonly` opens a data dir that another flwd process may own, for reading
        runs, logs and artifacts only (no lock, no recovery, no runs executed)."""
        self.settings = settings
        self._registry = registry
        self.pm = pm
        self.readonly = readonly
        self.bus = EventBus()
        self.store = Store(settings.data_path / "flwd.db", readonly=readonly)
        self.journal = Journal(self.store, self.bus)
        # A read-only service gets no live events (another process runs the runs), so a
        # follower there learns of new events only by re-reading the store: every second.
        self.feed = EventFeed(
            self.journal, self.run_ended, idle_recheck=1.0 if readonly else IDLE_RECHECK
        )
        self.store.on_commit = self.journal.committed
        self.repo = RunRepository(self.store)
        self.executor = RunExecutor(settings, self.journal, pm)
        self.scheduler = Scheduler(
            max_concurrency=settings.max_concurrency,
            max_queue=settings.max_queue,
            start=self._start,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._idempotency = asyncio.Lock()
        self._cancelling: dict[str, ActiveRun] = {}  # waiting runs being cancelled
        self._cancel_calls: dict[str, asyncio.Future[Run]] = {}
        self._lock_fd: int | None = None
        self.pruner = Pruner(
            self.store,
            settings,
            blob_root=self.executor.blob_root,
            work_root=self.executor.work_root,
            job_retention=self._job_retention,
            active=self._active_runs,
        )
        self._pruning: asyncio.Task[None] | None = None
        #: where runs' processes are kept: chosen at start (`settings.containment`)
        self.containment = Containment(SUBREAPER)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def registry(self) -> JobRegistry:
        if self._registry is None:
            raise FlwdError("this engine was opened without a job catalog")
        return self._registry

    async def __aenter__(self) -> RunService:
        if self.readonly:
            await self.store.__aenter__()
            return self
        self._lock_data_dir()
        self.executor.adopting = adopt_orphans()
        try:
            self.containment = Containment.choose(
                self.settings.containment, self.settings.data_path
            )
            self.executor.containment = self.containment
            await self.store.__aenter__()
            await self.journal.open()
            if self.pm.hook.run_event.get_hookimpls():
                self.journal.listeners.append(self._notify_plugins)
            await recover_lost_runs(
                self.repo, self.journal, self.settings.kill_grace, self.containment
            )
            await repair_unended_steps(self.repo, self.journal, self.settings.kill_grace)
            await self._requeue_pending()
            keep = {a.run.run_id for a in self.scheduler.running() + self.scheduler.pending()}
            await asyncio.to_thread(clean_work_root, self.executor.work_root, keep)
            if self.settings.prune_interval > 0:
                self._pruning = asyncio.create_task(
                    self.pruner.run_every(self.settings.prune_interval), name="flwd-pruner"
                )
        except BaseException:
            await self.store.__aexit__(None, None, None)
            self._unlock_data_dir()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop cleanly: running runs are cancelled (their processes terminated) and end
        `cancelled`; queued runs stay `pending` in the store and are queued again at the
        next start."""
        if self.readonly:
            await self.store.__aexit__(None, None, None)
            return
        await self._stop_pruning()
        self.scheduler.close()
        for active in self.scheduler.running():
            active.shutting_down = True
            active.stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.kill_grace + 10)
        await self.executor.aclose()
        self.containment.close()
        await self.store.__aexit__(None, None, None)
        self._unlock_data_dir()

    async def _stop_pruning(self) -> None:
        """A pass in progress ends after its current batch (bounded), so that what it
        deleted from the store is deleted from the disk too."""
        self.pruner.stop()
        if self._pruning is not None:
            task, self._pruning = self._pruning, None
            if self.pruner.busy:  # mid-pass: let its current batch finish
                await asyncio.wait({task}, timeout=10)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _lock_data_dir(self) -> None:
        self._lock_fd = lock_data_dir(self.settings)

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def healthy(self) -> bool:
        return await self.store.healthy()

    def containment_info(self) -> ContainmentInfo:
        """How this engine keeps every process of a run from outliving it."""
        return self.containment.info()

    # -- runs -----------------------------------------------------------------------------

    async def create_run(
        self,
        job_id: str,
        args: dict[str, Any] | None,
        *,
        tenant: str = "default",
        idempotency_key: str | None = None,
    ) -> Run:
        job = self.registry.catalog.get(job_id)
        validated = validate_args(job, args)
        masked = mask_secrets(job, validated)
        if idempotency_key is None:
            return await self._create(job, validated, masked, tenant, ())
        fingerprint = _fingerprint(job.id, masked, tenant)
        async with self._idempotency:
            existing = await self.repo.idempotency_key(tenant, idempotency_key)
            if existing is not None:
                if existing[0] != fingerprint:
                    raise IdempotencyKeyReused(idempotency_key)
                return await self.get_run(existing[1])
            return await self._create(
                job,
                validated,
                masked,
                tenant,
                [(idempotency_key, fingerprint)],
            )

    async def _create(
        self,
        job: JobSpec,
        validated: dict[str, Any],
        masked: dict[str, Any],
        tenant: str,
        keys: Any,
    ) -> Run:
        self.scheduler.check_capacity()
        secrets = secret_values(job, validated)
        # a secret with no text to mask (a boolean) still must not be stored or resumed
        has_secrets = bool(secrets) or next(secret_items(job, validated), None) is not None
        run = Run(
            run_id=f"run_{ULID()}",
            job_id=job.id,
            status=RunStatus.PENDING,
            created_at=utcnow(),
            tenant=tenant,
            args=masked,
            job_digest=job.digest,
        )
        statements = [rows.insert_run(run, has_secrets=has_secrets)]
        statements += rows.insert_steps(run.run_id, job.steps)
        statements += [
            rows.insert_idempotency_key(tenant, key, fp, run.run_id, run.created_at)
            for key, fp in keys
        ]
        created = self.journal.post(
            "run.created",
            run.run_id,
            job.id,
            {"status": "pending", "tenant": tenant, "args": masked},
            statements=statements,
        )
        assert created is not None
        active = ActiveRun(
            run=run,
            job=job,
            args=validated,
            redactor=Redactor(secrets, has_secrets=has_secrets),
            concurrency_key=concurrency_key(
                job.concurrency.key if job.concurrency else None, validated
            ),
            created=created,
        )
        # Queued at once, so that its first writes share the commit of run.created; no
        # process starts before that commit (see RunExecutor), and the caller is answered
        # only after it.
        self.scheduler.submit(active)
        try:
            await created
        except BaseException:
            active.cancel_requested = True
            self.scheduler.remove_pending(run.run_id)
            active.stop.set()
            raise
        return run

    def _start(self, active: ActiveRun) -> None:
        self.executor.begin(active)
        task = asyncio.create_task(self._execute(active), name=f"flwd-{active.run.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, active: ActiveRun) -> None:
        try:
            await self.executor.execute(active)
        except Exception:
            log.exception("run %s crashed the executor", active.run.run_id)
        finally:
            self.scheduler.release(active.run.run_id)

    async def restart_run(
        self,
        run_id: str,
        *,
        args: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """A new run of the same job with the same arguments; secret arguments were never
        stored, so they must be given again in `args` (which also overrides others)."""
        previous = await self.get_run(run_id)
        job = self.registry.catalog.get(previous.job_id)
        merged = without_secrets(job, previous.args)
        merged.update(args or {})
        return await self.create_run(
            job.id, merged, tenant=previous.tenant, idempotency_key=idempotency_key
        )

    async def get_run(self, run_id: str) -> Run:
        run = await self.repo.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        active = self.scheduler.get(run_id) or self._cancelling.get(run_id)
        if active is not None:
            if timeout is None:  # the common call: no timeout context to set up
                await active.done.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await active.done.wait()
            if active.done.is_set() and active.final is not None:
                return active.final  # what its committed run.finished stored
        return await self.get_run(run_id)

    async def cancel_run(self, run_id: str) -> Run:
        # a cancel arriving while another is in progress (a double click, a retried
        # request) gets that one's answer
        joined = self._cancel_calls.get(run_id)
        if joined is not None:
            return await asyncio.shield(joined)
        answer: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieve)
        self._cancel_calls[run_id] = answer
        try:
            run = await self._cancel(run_id)
        except asyncio.CancelledError:
            answer.cancel()
            raise
        except BaseException as exc:
            answer.set_exception(exc)
            raise
        finally:
            del self._cancel_calls[run_id]
        answer.set_result(run)
        return run

    async def _cancel(self, run_id: str) -> Run:
        run = await self.get_run(run_id)
        if run.status in TERMINAL_RUN:
            raise RunNotCancellable(run_id, run.status.value)
        active = self.scheduler.get(run_id) or self._cancelling.get(run_id)
        if active is None:  # it ended while we looked
            now = await self.get_run(run_id)
            if now.status is RunStatus.CANCELLED:  # by a cancel racing this one: same end
                return now
            raise RunNotCancellable(run_id, now.status.value)
        first_request = not active.cancel_requested
        active.cancel_requested = True
        # off the queue before the first await: a slot freed meanwhile must not start it
        waiting = self.scheduler.remove_pending(run_id) is not None
        if not waiting:
            if first_request:
                # committed before the run.finished this call waits for
                self.journal.post(
                    "run.cancelled", run_id, run.job_id, {"status": "cancelling"}, wait=False
                )
            active.stop.set()
            await active.done.wait()
            return active.final or await self.get_run(run_id)
        # a second cancel arriving meanwhile finds it here and waits for this one
        self._cancelling[run_id] = active
        try:
            self.journal.post(
                "run.cancelled", run_id, run.job_id, {"status": "cancelling"}, wait=False
            )
            await self.journal.append(
                "run.finished",
                run_id,
                run.job_id,
                {"status": "cancelled", "reason": None, "error": "cancelled before it started"},
                statements=[
                    rows.update_run(
                        run_id,
                        status=RunStatus.CANCELLED.value,
                        error="cancelled before it started",
                        finished_at=utcnow(),
                    ),
                    ("UPDATE steps SET status = 'cancelled' WHERE run_id = ?", (run_id,)),
                ],
            )
        finally:
            del self._cancelling[run_id]
            active.done.set()
        return await self.get_run(run_id)

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
        confined_tenant: str | None = None,
        job_patterns: tuple[str, ...] | None = None,
    ) -> tuple[list[Run], int]:
        return await self.repo.page(
            confined_tenant=confined_tenant,
            job_patterns=job_patterns,
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

    # -- retention ------------------------------------------------------------------------

    def _job_retention(self, job_id: str) -> RetentionSpec | None:
        """The job's `retention:`; a job whose config is invalid keeps everything (its
        block cannot be read); a job that is gone follows the defaults."""
        return job_retention(self._registry.catalog if self._registry else None, job_id)

    def _active_runs(self) -> list[Run]:
        actives = self.scheduler.running() + self.scheduler.pending()
        return [a.run for a in actives] + [a.run for a in self._cancelling.values()]

    async def prune(
        self,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
        max_age: float | None = None,
        max_runs: int | None = None,
    ) -> PruneReport:
        """One retention pass now (see `flwd.engine.retention`)."""
        return await self.pruner.prune(dry_run=dry_run, now=now, max_age=max_age, max_runs=max_runs)

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
        self,
        *,
        run_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        confined_tenant: str | None = None,
        job_patterns: tuple[str, ...] | None = None,
    ) -> tuple[list[Artifact], int]:
        return await self.repo.artifacts(
            run_id=run_id,
            limit=limit,
            offset=offset,
            confined_tenant=confined_tenant,
            job_patterns=job_patterns,
        )

    async def get_artifact(self, artifact_id: str) -> tuple[Artifact, Path]:
        artifact = await self.repo.artifact(artifact_id)
        if artifact is None:
            raise ArtifactNotFound(artifact_id)
        path = self.executor.blob_root / artifact.sha256[:2] / artifact.sha256
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

    def _notify_plugins(self, records: list[Record]) -> None:
        for record in records:
            for event in record.events():
                try:
                    self.pm.hook.run_event(event=event)
                except Exception:
                    log.exception("a run_event hook failed for event %s", event.id)

    async def _requeue_pending(self) -> None:
        for run in await self.repo.with_status(RunStatus.PENDING):
            reason: str | None = None
            job: JobSpec | None = None
            try:
                job = self.registry.catalog.get(run.job_id)
            except (JobNotFound, FlwdError) as exc:
                reason = f"cannot resume after restart: {exc.detail}"
            if job is not None and await self.repo.has_secrets(run.run_id):
                reason = "cannot resume after restart: its secret arguments are never stored"
            if reason is not None or job is None:
                await self.journal.append(
                    "run.finished",
                    run.run_id,
                    run.job_id,
                    {"status": "failed", "reason": FailureReason.LOST.value, "error": reason},
                    statements=[
                        rows.update_run(
                            run.run_id,
                            status=RunStatus.FAILED.value,
                            reason=FailureReason.LOST.value,
                            error=reason,
                            finished_at=utcnow(),
                        )
                    ],
                )
                continue
            self.scheduler.submit(
                ActiveRun(
                    run=run,
                    job=job,
                    args=dict(run.args),
                    redactor=Redactor([]),
                    concurrency_key=concurrency_key(
                        job.concurrency.key if job.concurrency else None, run.args
                    ),
                )
            )


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an answer nobody joined must not be logged as unretrieved


def _fingerprint(job_id: str, masked_args: dict[str, Any], tenant: str) -> str:
    canonical = msgspec.json.encode(
        {"job_id": job_id, "args": masked_args, "tenant": tenant}, order="sorted"
    )
    return hashlib.sha256(canonical).hexdigest()
