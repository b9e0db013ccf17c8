"""`RunService`: the engine's one public face, used by the API, the CLI and extensions.

It owns the store, the journal and bus, the scheduler and the runs this process executes.
Only one engine may use a data dir at a time (`flwd.engine.datadir_lock`), because event
ids and run slots are allocated in memory. Here: its lifecycle (start-up recovery, clean
shutdown) and what changes runs (create, restart, cancel, wait); what reads them is
`flwd.engine.queries.RunQueries`, which it inherits; each run is driven by
`flwd.engine.run_driver.RunDriver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime
from typing import Any

import pluggy
from ulid import ULID

from flwd.engine import idempotency
from flwd.engine.active_run import ActiveRun
from flwd.engine.containment import SUBREAPER, Containment
from flwd.engine.datadir_lock import lock_data_dir
from flwd.engine.output import Redactor
from flwd.engine.plugin_events import run_event_listener
from flwd.engine.processes import adopt_orphans
from flwd.engine.queries import RunQueries
from flwd.engine.recovery import (
    clean_work_root,
    recover_lost_runs,
    repair_unended_steps,
    requeue_pending,
)
from flwd.engine.retention import Pruner, PruneReport, job_retention
from flwd.engine.run_driver import RunDriver
from flwd.engine.scheduler import Scheduler, concurrency_key
from flwd.errors import FlwdError, IdempotencyKeyReused, RunNotCancellable
from flwd.events.bus import EventBus
from flwd.events.feed import IDLE_RECHECK, EventFeed
from flwd.events.journal import Journal
from flwd.jobs.arguments import (
    mask_secrets,
    secret_items,
    secret_values,
    validate_args,
    without_secrets,
)
from flwd.jobs.registry import JobRegistry
from flwd.models import ContainmentInfo, JobSpec, RetentionSpec, Run, utcnow
from flwd.settings import Settings
from flwd.states import TERMINAL_RUN, RunStatus
from flwd.storage import runs as rows
from flwd.storage.runs import RunRepository
from flwd.storage.store import Store

log = logging.getLogger(__name__)


class RunService(RunQueries):
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
        self.driver = RunDriver(settings, self.journal, pm)
        self.blob_root = self.driver.blob_root
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
            blob_root=self.driver.blob_root,
            work_root=self.driver.work_root,
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
        self.driver.adopting = adopt_orphans()
        try:
            self.containment = Containment.choose(
                self.settings.containment, self.settings.data_path
            )
            self.driver.containment = self.containment
            await self.store.__aenter__()
            await self.journal.open()
            notify_plugins = run_event_listener(self.pm)
            if notify_plugins is not None:
                self.journal.listeners.append(notify_plugins)
            await recover_lost_runs(
                self.repo, self.journal, self.settings.kill_grace, self.containment
            )
            await repair_unended_steps(self.repo, self.journal, self.settings.kill_grace)
            await requeue_pending(
                self.repo,
                self.journal,
                lambda job_id: self.registry.catalog.get(job_id),
                self.scheduler.submit,
            )
            keep = {a.run.run_id for a in self.scheduler.running() + self.scheduler.pending()}
            await asyncio.to_thread(clean_work_root, self.driver.work_root, keep)
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
        await self.driver.aclose()
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
        fingerprint = idempotency.fingerprint(job.id, masked, tenant)
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
        # process starts before that commit (see RunDriver), and the caller is answered
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
        self.driver.begin(active)
        task = asyncio.create_task(self._execute(active), name=f"flwd-{active.run.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, active: ActiveRun) -> None:
        try:
            await self.driver.execute(active)
        except Exception:
            log.exception("run %s crashed the run driver", active.run.run_id)
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


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an answer nobody joined must not be logged as unretrieved
