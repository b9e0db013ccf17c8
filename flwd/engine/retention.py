"""Pruning finished runs by the retention policy, in the background and by `flwd prune`.

The policy of a job is its `retention:` block over the server's defaults
(`--retention-max-age`, `--retention-max-runs`): a finished run goes once it finished
longer than `max_age` ago, or once `max_runs` newer runs of its job exist. Runs that are
not terminal are never selected, and the delete statements check it again.

A pass deletes in bounded batches (at most `BATCH_RUNS` runs and about `BATCH_ROWS` event
rows per transaction), each through the store's one writer like any write: other writes
queue behind a batch for a few milliseconds, never behind a whole pass, and a big batch
is applied on the writer's thread, not the event loop's. After each batch commits, the
artifact blobs no remaining row references are deleted, and any work dir the runs left.

Blobs are shared by content, so a run still going may be writing a blob with the same
digest as one a pruned run held, before its own artifact row is stored. A blob is
therefore first renamed aside, and put back if it was written after the oldest run still
active began (its content is the same whichever copy wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol

import msgspec

from flwd.engine.artifacts import blob_path
from flwd.errors import FlwdError, JobNotRunnable, StorageError
from flwd.models import JobSpec, RetentionSpec, Run, utcnow
from flwd.settings import Settings
from flwd.storage import retention as sql
from flwd.storage.retention import Candidate, Policy
from flwd.storage.store import Store

log = logging.getLogger(__name__)

#: runs read per selection query
PAGE_RUNS = 200
#: runs, and stored event rows (about), deleted per transaction
BATCH_RUNS = 20
BATCH_ROWS = 1000
#: what one deleted row counts for against the store's queue (as a small write does)
_ROW_BYTES = 256
#: file times may lag the clock by a tick; a blob this close to the cut-off is kept
_MTIME_MARGIN = 1.0


class PruneReport(msgspec.Struct, kw_only=True):
    """What a pass deleted, or with `dry_run` would delete."""

    dry_run: bool
    runs: int = 0
    events: int = 0
    artifacts: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    workdirs: int = 0
    #: runs per job
    jobs: dict[str, int] = {}


def effective_policy(spec: RetentionSpec | None, *, max_age: float, max_runs: int) -> Policy:
    """A job's `retention:` over the defaults: a field it leaves out takes the default."""
    if spec is None:
        return Policy(max_age=max_age, max_runs=max_runs)
    return Policy(
        max_age=max_age if spec.max_age is None else spec.max_age,
        max_runs=max_runs if spec.max_runs is None else spec.max_runs,
    )


class _Catalog(Protocol):
    def get(self, job_id: str) -> JobSpec: ...


#: what a job whose `retention:` cannot be read gets: nothing is pruned
KEEP_EVERYTHING = RetentionSpec(max_age=0, max_runs=0)


def job_retention(catalog: _Catalog | None, job_id: str) -> RetentionSpec | None:
    """The `retention:` block of `job_id` in `catalog`. A job listed as invalid keeps
    everything, since its block cannot be read; a job that is gone (or no catalog) has
    none, so the defaults apply."""
    if catalog is None:
        return None
    try:
        return catalog.get(job_id).retention
    except JobNotRunnable:
        return KEEP_EVERYTHING
    except FlwdError:
        return None


class Pruner:
    """Applies the retention policy to one store and data dir.

    `job_retention(job_id)` is the job's `retention:` block (None when it has none or the
    job is gone); `active()` the runs this engine is executing or about to (never pruned,
    and what dates the blob cut-off).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        blob_root: Path,
        work_root: Path,
        job_retention: Callable[[str], RetentionSpec | None],
        active: Callable[[], Iterable[Run]],
    ) -> None:
        self.store = store
        self.settings = settings
        self.blob_root = blob_root
        self.work_root = work_root
        self.job_retention = job_retention
        self.active = active
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        #: unreferenced blobs kept because they looked freshly written: tried again
        self._recheck: set[str] = set()

    async def prune(
        self,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
        max_age: float | None = None,
        max_runs: int | None = None,
        paced: bool = False,
    ) -> PruneReport:
        """One pass over every job with stored runs. `max_age`/`max_runs` replace the
        server's defaults for this pass (a job's own `retention:` still wins); `now` is
        the time ages are measured from. `paced`: after each batch, pause as long as it
        took, so that a pass never holds the writer more than half the time."""
        async with self._lock:  # the background task and a manual pass never overlap
            return await self._prune(
                dry_run=dry_run,
                now=now or utcnow(),
                max_age=self.settings.retention_max_age if max_age is None else max_age,
                max_runs=self.settings.retention_max_runs if max_runs is None else max_runs,
                paced=paced,
            )

    async def _prune(
        self, *, dry_run: bool, now: datetime, max_age: float, max_runs: int, paced: bool
    ) -> PruneReport:
        if not dry_run and self.store.readonly:
            raise StorageError("this data dir is open read-only: pruning needs its lock")
        report = PruneReport(dry_run=dry_run)
        doomed_blobs: dict[str, int] = {}  # dry run: sha256 -> references in the plan
        for job_id in await sql.job_ids(self.store):
            if self._stop.is_set():
                break
            policy = effective_policy(
                self.job_retention(job_id), max_age=max_age, max_runs=max_runs
            )
            if policy.keeps_everything:
                continue
            boundary = await sql.count_boundary(self.store, job_id, policy.max_runs)
            before: str | None = None
            while not self._stop.is_set():
                page = await sql.expired(
                    self.store,
                    job_id,
                    policy,
                    now=now,
                    boundary=boundary,
                    before=before,
                    limit=PAGE_RUNS,
                )
                if not page:
                    break
                before = page[-1].run_id
                busy = {run.run_id for run in self.active()}
                page = [c for c in page if c.run_id not in busy]
                for batch in _batches(page):
                    if self._stop.is_set():
                        break
                    _count(report, batch)
                    if dry_run:
                        for c in batch:
                            for sha, _size in c.artifacts:
                                doomed_blobs[sha] = doomed_blobs.get(sha, 0) + 1
                        report.workdirs += sum(
                            1 for c in batch if os.path.lexists(self.work_root / c.run_id)
                        )
                    else:
                        started = time.monotonic()
                        await self._delete(batch, report)
                        if paced:
                            await asyncio.sleep(time.monotonic() - started)
        if dry_run:
            await self._count_doomed_blobs(doomed_blobs, report)
        elif self._recheck and not self._stop.is_set():
            await self._remove_blobs(set(), [], report)
        return report

    async def _delete(self, batch: list[Candidate], report: PruneReport) -> None:
        # dated before the references are read: see the module's docstring
        cutoff = self._blob_cutoff()
        rows = sum(c.events + 4 for c in batch)
        commit = self.store.write(sql.delete_statements(batch), size=rows * _ROW_BYTES)
        assert commit is not None
        await commit
        await self._remove_blobs(
            {sha for c in batch for sha, _ in c.artifacts},
            [self.work_root / c.run_id for c in batch],
            report,
            cutoff,
        )

    async def _remove_blobs(
        self,
        shas: set[str],
        workdirs: list[Path],
        report: PruneReport,
        cutoff: float | None = None,
    ) -> None:
        """Delete the blobs among `shas` (and those kept by an earlier pass) that no row
        references any more, and the work dirs."""
        if cutoff is None:
            cutoff = self._blob_cutoff()
        shas |= self._recheck
        unreferenced = [sha for sha in sorted(shas) if not await sql.references(self.store, sha)]
        blobs, size, kept, removed = await asyncio.to_thread(
            _remove_files, self.blob_root, unreferenced, cutoff, workdirs
        )
        self._recheck = set(kept)
        report.blobs += blobs
        report.blob_bytes += size
        report.workdirs += removed

    async def _count_doomed_blobs(self, doomed: dict[str, int], report: PruneReport) -> None:
        """Dry run: the blobs whose every reference is in the plan."""
        last = [
            sha
            for sha, planned in sorted(doomed.items())
            if await sql.references(self.store, sha) <= planned
        ]
        sizes = await asyncio.to_thread(_blob_sizes, self.blob_root, last)
        report.blobs += len(sizes)
        report.blob_bytes += sum(sizes)

    def _blob_cutoff(self) -> float:
        started = [run.created_at.timestamp() for run in self.active()]
        return min([time.time(), *started]) - _MTIME_MARGIN

    @property
    def busy(self) -> bool:
        """Whether a pass is in progress."""
        return self._lock.locked()

    def stop(self) -> None:
        """Make a running pass end after its current batch."""
        self._stop.set()

    async def run_every(self, interval: float) -> None:
        """Prune every `interval` seconds until `stop` (the first pass one interval after
        the start). A failed pass is logged; the next one tries again."""
        while not self._stop.is_set():
            await asyncio.sleep(interval)  # `stop` is followed by a cancel: it ends here
            try:
                report = await self.prune(paced=True)
            except Exception:
                log.exception("pruning failed; the next pass retries")
                continue
            if report.runs:
                log.info(
                    "pruned %d runs (%d event rows, %d artifacts, %d blobs of %d bytes)",
                    report.runs,
                    report.events,
                    report.artifacts,
                    report.blobs,
                    report.blob_bytes,
                )


def _batches(page: list[Candidate]) -> Iterable[list[Candidate]]:
    """The page cut into batches of at most `BATCH_RUNS` runs and about `BATCH_ROWS` event
    rows (at least one run)."""
    batch: list[Candidate] = []
    rows = 0
    for candidate in page:
        if batch and (len(batch) == BATCH_RUNS or rows + candidate.events > BATCH_ROWS):
            yield batch
            batch, rows = [], 0
        batch.append(candidate)
        rows += candidate.events
    if batch:
        yield batch


def _count(report: PruneReport, batch: list[Candidate]) -> None:
    report.runs += len(batch)
    report.events += sum(c.events for c in batch)
    report.artifacts += sum(len(c.artifacts) for c in batch)
    for c in batch:
        report.jobs[c.job_id] = report.jobs.get(c.job_id, 0) + 1


def _blob_sizes(blob_root: Path, shas: list[str]) -> list[int]:
    sizes = []
    for sha in shas:
        with contextlib.suppress(OSError):
            sizes.append(blob_path(blob_root, sha).stat().st_size)
    return sizes


def _remove_files(
    blob_root: Path, shas: list[str], cutoff: float, workdirs: list[Path]
) -> tuple[int, int, list[str], int]:
    """Delete unreferenced blobs written before `cutoff`, and the work dirs that exist.
    Returns (blobs deleted, their bytes, blobs kept as too recent, work dirs deleted)."""
    blobs = size = 0
    kept = []
    for sha in shas:
        path = blob_path(blob_root, sha)
        aside = path.with_name(f".pruning-{sha}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        info = os.stat(aside)
        if info.st_mtime >= cutoff:
            # written by a run still going (its row is not stored yet): keep it
            os.rename(aside, path)
            kept.append(sha)
            continue
        os.unlink(aside)
        blobs += 1
        size += info.st_size
    removed = 0
    for workdir in workdirs:
        if os.path.lexists(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
            removed += 1
    return blobs, size, kept, removed
