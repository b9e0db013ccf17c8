"""The catalog: an immutable snapshot of every job flwd knows, swapped whole on change.

Readers take `registry.catalog` once and use that object for the whole request, so a hot
reload in the middle of a request can never show half of an old and half of a new set
of jobs.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwd.errors import JobNotFound, JobNotRunnable
from flwd.models import Diagnostic, InvalidJob, JobSpec


class Catalog:
    """Jobs by id plus the invalid job folders, at one `version`."""

    __slots__ = ("_invalid", "_invalid_by_id", "_jobs", "version")

    def __init__(
        self, jobs: Iterable[JobSpec], invalid: Iterable[InvalidJob] = (), *, version: int = 0
    ) -> None:
        self.version = version
        self._jobs = {job.id: job for job in sorted(jobs, key=lambda job: job.id)}
        self._invalid = tuple(sorted(invalid, key=lambda bad: (bad.id, bad.source, bad.path)))
        self._invalid_by_id: dict[str, InvalidJob] = {}
        for bad in self._invalid:
            self._invalid_by_id.setdefault(bad.id, bad)

    def get(self, job_id: str) -> JobSpec:
        """The job with this id; `JobNotRunnable` when its folder is invalid,
        `JobNotFound` when there is no such job."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        bad = self._invalid_by_id.get(job_id)
        if bad is not None:
            raise JobNotRunnable(job_id, [_describe(d) for d in bad.diagnostics])
        raise JobNotFound(job_id)

    def list(self, *, namespace: str | None = None, source: str | None = None) -> list[JobSpec]:
        """Valid jobs sorted by id, optionally only one namespace (exact match) or source."""
        return [
            job
            for job in self._jobs.values()
            if (namespace is None or job.namespace == namespace)
            and (source is None or job.source == source)
        ]

    @property
    def invalid(self) -> tuple[InvalidJob, ...]:
        """Job folders that could not be loaded, each with its diagnostics."""
        return self._invalid

    def same_content(self, other: Catalog) -> bool:
        """True when both hold exactly the same jobs and invalid folders."""
        return self._jobs == other._jobs and self._invalid == other._invalid

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __repr__(self) -> str:
        return f"<Catalog v{self.version}: {len(self)} jobs, {len(self._invalid)} invalid>"


def _describe(diagnostic: Diagnostic) -> str:
    where = f"{diagnostic.file}:{diagnostic.line}" if diagnostic.line else diagnostic.file
    return f"{where}: {diagnostic.reason}"
