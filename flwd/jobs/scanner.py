"""Scan one source root for job folders (directories holding `config.yaml`).

The walk (`flwd.jobs.walk`) finds the folders; loading is incremental: a folder whose
files have the same names, sizes, inodes and modification times as last time, and that
no change event mentions, keeps its previous result. A rescan of 10,000 jobs after one
edit therefore costs one directory listing and one folder load, plus bookkeeping.
Two folders whose ids normalise to the same id are both reported, neither is loaded.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from flwd.jobs.folder import CONFIG_NAME, JobFolder
from flwd.jobs.ids import job_id_from_parts
from flwd.jobs.loader import load_job
from flwd.jobs.parallel import load_in_parallel
from flwd.jobs.steps import is_within
from flwd.jobs.walk import FoundFolder, Walker
from flwd.models import Diagnostic, InvalidJob, JobSpec

#: The id under which problems of a source root itself (missing, unreadable) are listed.
ROOT_ID = "."
#: Above this many changed paths, dropping every cached folder is cheaper than matching.
_MAX_TARGETED_INVALIDATIONS = 256

Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class SourceScan:
    """What one scan of one source found: loadable jobs and invalid job folders."""

    jobs: tuple[JobSpec, ...] = ()
    invalid: tuple[InvalidJob, ...] = ()


class FolderScanner:
    """Scans one source root; keeps per-folder results between scans of the same root."""

    def __init__(
        self, source_name: str, root: str | os.PathLike[str], *, single_job: bool = False
    ) -> None:
        """`single_job=True` treats `root` itself as one job folder (for `flwd validate
        jobs/backup/daily`): its id is its own normalised name."""
        self.source_name = source_name
        self.root = os.path.abspath(root)
        self._walker = Walker(source_name, self.root, single_job=single_job)
        self._cache: dict[str, tuple[Fingerprint, JobSpec | InvalidJob]] = {}

    def scan(self, changed: Collection[str] | None = None) -> SourceScan:
        with gc_paused():
            return self._scan(changed)

    def _scan(self, changed: Collection[str] | None) -> SourceScan:
        """Scan the root. `changed` names paths known to have changed (from a watcher):
        only their directories are listed again, and job folders containing them are
        reloaded even if their files look the same. None lists every directory again and
        reloads every folder whose files (names, sizes, inodes, mtimes) changed."""
        self._invalidate(changed)
        found, root_problems = self._walker.walk(changed)
        fingerprints = [_fingerprint(item) for item in found]
        todo = [
            item
            for item, fingerprint in zip(found, fingerprints, strict=True)
            if not item.refused and self._cache.get(item.path, (None,))[0] != fingerprint
        ]
        for item, result in zip(todo, load_folders(self.source_name, todo), strict=True):
            self._cache[item.path] = (_fingerprint(item), result)
        results: list[JobSpec | InvalidJob] = [self._result(item) for item in found]
        live = {item.path for item in found}
        for stale in [path for path in self._cache if path not in live]:
            del self._cache[stale]
        results = mark_conflicts(results)
        if root_problems:
            results.append(
                InvalidJob(
                    id=ROOT_ID, source=self.source_name, path=self.root, diagnostics=root_problems
                )
            )
        jobs = sorted((r for r in results if isinstance(r, JobSpec)), key=lambda j: j.id)
        invalid = sorted(
            (r for r in results if isinstance(r, InvalidJob)), key=lambda j: (j.id, j.path)
        )
        return SourceScan(jobs=tuple(jobs), invalid=tuple(invalid))

    def _invalidate(self, changed: Collection[str] | None) -> None:
        if changed is None:
            return  # the walk lists everything; fingerprints decide what to reload
        if len(changed) > _MAX_TARGETED_INVALIDATIONS:
            self._cache.clear()
            return
        for raw in changed:
            path = os.path.abspath(raw)
            current = path
            while is_within(current, self.root):  # the folder itself and its ancestors
                self._cache.pop(current, None)
                parent = os.path.dirname(current)
                if parent == current:
                    break
                current = parent
            prefix = path + os.sep  # folders below a renamed or deleted directory
            for key in [k for k in self._cache if k.startswith(prefix)]:
                del self._cache[key]

    def _result(self, item: FoundFolder) -> JobSpec | InvalidJob:
        """The folder's loaded result plus what the walk found wrong (escaping symlinks)."""
        if item.refused:
            return InvalidJob(
                id=job_id_from_parts(item.parts) or os.path.basename(item.path),
                source=self.source_name,
                path=item.path,
                diagnostics=tuple(item.problems),
            )
        result = self._cache[item.path][1]
        if not item.problems:
            return result
        diagnostics = tuple(item.problems)
        if isinstance(result, InvalidJob):
            diagnostics = result.diagnostics + diagnostics
        return InvalidJob(
            id=result.id, source=result.source, path=result.path, diagnostics=diagnostics
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a scan allocates many small objects.

    A scan creates tens of thousands of objects and no reference cycles, and every
    collection would traverse the whole catalog still in memory: with 10,000 jobs that
    was 60% of an incremental rescan. Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fingerprint(item: FoundFolder) -> Fingerprint:
    return tuple(sorted((rel, st.st_mtime_ns, st.st_size, st.st_ino) for rel, _, st in item.files))


def load_folders(source_name: str, items: list[FoundFolder]) -> list[JobSpec | InvalidJob]:
    """Load folders, over all cores when there are many (see `flwd.jobs.parallel`)."""
    loaded = load_in_parallel(source_name, items, _load_folder)
    if loaded is not None:
        return loaded
    return [_load_folder(source_name, item) for item in items]


def _load_folder(source_name: str, item: FoundFolder) -> JobSpec | InvalidJob:
    """Digest the folder's files, then load it; a bug here must not stop the whole scan."""
    digest = hashlib.sha256()
    config: bytes | OSError = FileNotFoundError(2, "config.yaml disappeared during the scan")
    for relative, path, _ in sorted(item.files):
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(path, "rb") as handle:
                if relative == CONFIG_NAME:
                    config = handle.read()
                    digest.update(hashlib.sha256(config).digest())
                else:
                    digest.update(hashlib.file_digest(handle, "sha256").digest())
        except OSError as exc:
            if relative == CONFIG_NAME:
                config = exc
            digest.update(b"unreadable")
    folder = JobFolder(
        path=item.path,
        job_id=job_id_from_parts(item.parts),
        source=source_name,
        file_names=tuple(item.top_files),
        plain_files=frozenset(item.plain_files),
        config=config,
        digest=digest.hexdigest(),
    )
    try:
        return load_job(folder)
    except Exception as exc:  # one folder must never break discovery
        return InvalidJob(
            id=folder.job_id or os.path.basename(item.path),
            source=source_name,
            path=item.path,
            diagnostics=(
                Diagnostic(
                    file=os.path.join(item.path, CONFIG_NAME),
                    reason=f"internal error while loading this job ({type(exc).__name__}: "
                    f"{exc}); please report it",
                ),
            ),
        )


def mark_conflicts(results: list[JobSpec | InvalidJob]) -> list[JobSpec | InvalidJob]:
    """Every folder sharing its id with another becomes invalid, naming the others.
    Used within one source and again across sources (ids are global)."""
    by_id: dict[str, list[JobSpec | InvalidJob]] = {}
    for result in results:
        if result.id == ROOT_ID:  # problems of a source root, not a job
            by_id[f"{result.id}{id(result)}"] = [result]
            continue
        by_id.setdefault(result.id, []).append(result)
    out: list[JobSpec | InvalidJob] = []
    for job_id, group in by_id.items():
        if len(group) == 1:
            out.extend(group)
            continue
        for result in group:
            others = ", ".join(sorted(o.path for o in group if o is not result))
            conflict = Diagnostic(
                file=result.path,
                reason=f"job id '{job_id}' is also the id of {others}; folder names that differ "
                "only in case or punctuation give the same id, so rename one of them",
            )
            previous = result.diagnostics if isinstance(result, InvalidJob) else ()
            out.append(
                InvalidJob(
                    id=job_id,
                    source=result.source,
                    path=result.path,
                    diagnostics=(*previous, conflict),
                )
            )
    return out
