"""Scan one source root for job folders (directories holding `config.yaml`).

The walk is always complete, so new, moved and deleted folders and id conflicts are seen
the same way on every scan; what is incremental is loading: a folder whose files have
the same names, sizes, inodes and modification times as last time, and that no change
event mentions, keeps its previous result. That makes a rescan of 10,000 jobs after one
edit cost a directory walk plus one folder load.

Rules (documented in docs/jobs.md):
- hidden entries (`.git`, `.config.yaml.swp`) and `__pycache__` are ignored;
- a job folder inside a job folder is a job of its own; its files are not part of the
  outer job (nor of its digest);
- a symlink whose target is outside the source root is refused with a diagnostic; a
  symlinked directory inside the root is followed once (loops are cut);
- two folders whose ids normalise to the same id are both reported, neither is loaded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from flwd.jobs.folder import CONFIG_NAME, JobFolder
from flwd.jobs.ids import job_id_from_parts
from flwd.jobs.loader import load_job
from flwd.jobs.steps import is_within
from flwd.models import Diagnostic, InvalidJob, JobSpec

#: The id under which problems of a source root itself (missing, unreadable) are listed.
ROOT_ID = "."
_IGNORED_DIRS = frozenset({"__pycache__", "node_modules"})
#: Above this many changed paths, dropping every cached folder is cheaper than matching.
_MAX_TARGETED_INVALIDATIONS = 256

Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class SourceScan:
    """What one scan of one source found: loadable jobs and invalid job folders."""

    jobs: tuple[JobSpec, ...] = ()
    invalid: tuple[InvalidJob, ...] = ()


@dataclass
class _Found:
    path: str
    parts: tuple[str, ...]
    files: list[tuple[str, str, os.stat_result]] = field(default_factory=list)
    top_files: list[str] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)


class FolderScanner:
    """Scans one source root; keeps per-folder results between scans of the same root."""

    def __init__(
        self, source_name: str, root: str | os.PathLike[str], *, single_job: bool = False
    ) -> None:
        """`single_job=True` treats `root` itself as one job folder (for `flwd validate
        jobs/backup/daily`): its id is its own normalised name."""
        self.source_name = source_name
        self.root = os.path.abspath(root)
        self._single = single_job
        self._cache: dict[str, tuple[Fingerprint, JobSpec | InvalidJob]] = {}

    def scan(self, changed: Collection[str] | None = None) -> SourceScan:
        """Scan the root. `changed` names paths known to have changed (from a watcher):
        folders containing them are reloaded even if their files look the same; None
        reloads every folder."""
        self._invalidate(changed)
        found, root_problems = self._walk()
        results: list[JobSpec | InvalidJob] = [self._load(item) for item in found]
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
        if changed is None or len(changed) > _MAX_TARGETED_INVALIDATIONS:
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

    def _walk(self) -> tuple[list[_Found], tuple[Diagnostic, ...]]:
        root_real = os.path.realpath(self.root)
        if not os.path.isdir(self.root):
            reason = f"job source '{self.source_name}': directory {self.root} does not exist"
            return [], (Diagnostic(file=self.root, reason=reason),)
        found: list[_Found] = []
        problems: list[Diagnostic] = []
        visited = {root_real}
        start = (os.path.basename(self.root),) if self._single else ()
        stack: list[tuple[str, tuple[str, ...], _Found | None]] = [(self.root, start, None)]
        while stack:
            directory, parts, owner = stack.pop()
            try:
                with os.scandir(directory) as iterator:
                    entries = [e for e in iterator if not e.name.startswith(".")]
            except OSError as exc:
                reason = f"directory cannot be read: {exc.strerror}"
                (owner.problems if owner else problems).append(
                    Diagnostic(file=directory, reason=reason)
                )
                continue
            if any(e.name == CONFIG_NAME for e in entries):
                if parts:
                    owner = _Found(path=directory, parts=parts)
                    found.append(owner)
                else:
                    problems.append(
                        Diagnostic(
                            file=os.path.join(directory, CONFIG_NAME),
                            reason="config.yaml directly in the source root is ignored: "
                            "a job is a folder inside the root (e.g. jobs/hello/config.yaml)",
                        )
                    )
            for entry in entries:
                self._visit(entry, parts, owner, root_real, visited, stack, found)
        return found, tuple(problems)

    def _visit(
        self,
        entry: os.DirEntry[str],
        parts: tuple[str, ...],
        owner: _Found | None,
        root_real: str,
        visited: set[str],
        stack: list[tuple[str, tuple[str, ...], _Found | None]],
        found: list[_Found],
    ) -> None:
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not is_within(target, root_real):
                    reason = f"symlink points outside the source root (to {target}); refused"
                    if owner is None:  # not in any job: report it as an entry of its own
                        owner = _Found(path=entry.path, parts=(*parts, entry.name))
                        found.append(owner)
                    owner.problems.append(Diagnostic(file=entry.path, reason=reason))
                    return
                if entry.is_dir():
                    if target in visited:
                        return
                    visited.add(target)
            if entry.is_dir():
                if entry.name not in _IGNORED_DIRS:
                    stack.append((entry.path, (*parts, entry.name), owner))
            elif owner is not None and entry.is_file():
                relative = os.path.relpath(entry.path, owner.path)
                owner.files.append((relative, entry.path, entry.stat()))
                if os.path.dirname(relative) == "":
                    owner.top_files.append(entry.name)
        except OSError as exc:  # vanished mid-scan or a dangling symlink
            if owner is not None and entry.name == CONFIG_NAME:
                owner.problems.append(Diagnostic(file=entry.path, reason=str(exc.strerror)))

    def _load(self, item: _Found) -> JobSpec | InvalidJob:
        fingerprint = tuple(
            sorted((rel, st.st_mtime_ns, st.st_size, st.st_ino) for rel, _, st in item.files)
        )
        cached = self._cache.get(item.path)
        if cached is not None and cached[0] == fingerprint:
            result = cached[1]
        else:
            result = _load_folder(self.source_name, item)
            self._cache[item.path] = (fingerprint, result)
        if not item.problems:
            return result
        diagnostics = tuple(item.problems)
        if isinstance(result, InvalidJob):
            diagnostics = result.diagnostics + diagnostics
        return InvalidJob(
            id=result.id, source=result.source, path=result.path, diagnostics=diagnostics
        )


def _load_folder(source_name: str, item: _Found) -> JobSpec | InvalidJob:
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
        path=Path(item.path),
        job_id=job_id_from_parts(item.parts),
        source=source_name,
        file_names=tuple(item.top_files),
        config=config,
        digest=digest.hexdigest(),
    )
    try:
        return load_job(folder)
    except Exception as exc:  # one folder must never break discovery
        return InvalidJob(
            id=folder.job_id or folder.path.name,
            source=source_name,
            path=item.path,
            diagnostics=(
                Diagnostic(
                    file=str(folder.path / CONFIG_NAME),
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
