"""The job registry: owns the current catalog and keeps it in step with the sources.

A `JobRegistry` scans every configured source when it is built, then (as an async context
manager, typically a Litestar lifespan resource) runs one watcher task per source. Each
batch of changes is rescanned in a worker thread (so the event loop keeps serving) and, if
anything differs, a new immutable `Catalog` with a higher `version` replaces the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Collection
from types import TracebackType

import pluggy

from flwd.jobs.catalog import Catalog
from flwd.jobs.scanner import SourceScan, mark_conflicts
from flwd.jobs.sources import OpenSource, SourceType
from flwd.jobs.validation import validate_jobs
from flwd.models import InvalidJob, JobSpec
from flwd.settings import Settings, SettingsError

log = logging.getLogger("flwd.jobs")

#: Pause before restarting a watcher that failed, so a broken source cannot spin.
WATCH_RESTART_DELAY = 1.0


def source_types(pm: pluggy.PluginManager) -> dict[str, SourceType]:
    """Source types by name. pluggy calls later-registered plugins first and the built-in
    `fs` is `trylast`, so an extension's type of the same name replaces the built-in."""
    types: dict[str, SourceType] = {}
    for contributed in pm.hook.register_source_types():
        for source_type in contributed or ():
            types.setdefault(source_type.type, source_type)
    return types


class JobRegistry:
    """The current `Catalog`, rescans, and the watchers that trigger them."""

    def __init__(self, settings: Settings, pm: pluggy.PluginManager) -> None:
        """Open every configured source and scan it (synchronously). Raises
        `SettingsError` for a source whose type no plugin provides."""
        types = source_types(pm)
        self._sources: list[OpenSource] = []
        for source in settings.sources:
            source_type = types.get(source.type)
            if source_type is None:
                raise SettingsError(
                    f"job source '{source.name}' has type '{source.type}', which no installed "
                    f"plugin provides (known types: {', '.join(sorted(types))})"
                )
            self._sources.append(source_type.open(source))
        self._settings = settings
        self._pm = pm
        self._lock = threading.Lock()  # guards _scans, _catalog and _waiters
        self._scan_locks = {s.source.name: threading.Lock() for s in self._sources}
        self._scans: dict[str, SourceScan] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._catalog = Catalog((), version=0)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy: dict[str, bool] = {}
        self.rescan()

    @property
    def catalog(self) -> Catalog:
        """The current snapshot; take it once per request and use that object."""
        return self._catalog

    @property
    def watching(self) -> bool:
        """True while every source has a running, healthy watcher (False when watching is
        disabled in the settings or the registry is not entered)."""
        return bool(self._tasks) and all(
            not task.done() and self._healthy.get(task.get_name(), False) for task in self._tasks
        )

    def source_info(self) -> list[dict[str, str]]:
        """`[{"name", "type", "path"}]` per source, as `/api/v1/system/info` reports them."""
        return [
            {"name": s.source.name, "type": s.source.type, "path": s.location}
            for s in self._sources
        ]

    def rescan(self) -> Catalog:
        """Rescan every source from scratch and swap in the result (always a new version)."""
        for source in self._sources:
            self._scan(source, None)
        return self._publish(force=True)

    async def wait_for_change(self, after_version: int, timeout: float | None = None) -> Catalog:
        """The catalog once its version is above `after_version` (at once if it already
        is); raises `TimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            future: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._catalog.version > after_version:
                    return self._catalog
                self._waiters.append((loop, future))
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(future, remaining)
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, future))

    async def __aenter__(self) -> JobRegistry:
        if not self._settings.watch or self._tasks:
            return self
        self._stop = asyncio.Event()
        for source in self._sources:
            self._healthy[source.source.name] = True
            task = asyncio.create_task(self._watch(source), name=source.source.name)
            self._tasks.append(task)
        # Let each watcher arm itself (watchfiles sets up inotify on its first step), then
        # catch up on anything that changed between the initial scan and now: a full
        # listing, reloading only folders whose files changed.
        for _ in range(3):
            await asyncio.sleep(0)
        for source in self._sources:
            await asyncio.to_thread(self._scan, source, None)
        self._publish(force=False)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._stop.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stop = None

    async def _watch(self, source: OpenSource) -> None:
        stop = self._stop
        assert stop is not None
        name = source.source.name
        while not stop.is_set():
            try:
                async for changed in source.watch(stop):
                    await asyncio.to_thread(self._scan, source, changed)
                    self._publish(force=False)
                    self._healthy[name] = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching job source '%s' failed; restarting", name)
                self._healthy[name] = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WATCH_RESTART_DELAY)

    def _scan(self, source: OpenSource, changed: Collection[str] | None) -> None:
        with self._scan_locks[source.source.name]:
            result = source.scan(changed)
        with self._lock:
            self._scans[source.source.name] = result

    def _publish(self, *, force: bool) -> Catalog:
        with self._lock:
            merged: list[JobSpec | InvalidJob] = []
            for source in self._sources:
                scan = self._scans.get(source.source.name, SourceScan())
                merged.extend(scan.jobs)
                merged.extend(scan.invalid)
            merged = validate_jobs(self._pm, self._settings, mark_conflicts(merged))
            candidate = Catalog(
                [r for r in merged if isinstance(r, JobSpec)],
                [r for r in merged if isinstance(r, InvalidJob)],
                version=self._catalog.version + 1,
            )
            if not force and candidate.same_content(self._catalog):
                return self._catalog
            self._catalog = candidate
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                loop.call_soon_threadsafe(_wake, future)
        return candidate


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
