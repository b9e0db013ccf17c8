"""Fixtures of the job discovery tests (prefixed `jobs_`)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from flwd.jobs.scanner import FolderScanner, SourceScan
from flwd.models import InvalidJob, JobSpec


class JobsTree:
    """A source root in a temporary directory, with helpers to write and scan job folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        rel: str,
        config: str | bytes | None = "command: echo hi\n",
        files: dict[str, str | bytes] | None = None,
        executable: tuple[str, ...] = (),
    ) -> Path:
        """Create job folder `rel` with `config` (dedented) and extra `files`."""
        folder = self.root / rel
        folder.mkdir(parents=True, exist_ok=True)
        if config is not None:
            data = config if isinstance(config, bytes) else textwrap.dedent(config).encode()
            (folder / "config.yaml").write_bytes(data)
        for name, content in (files or {}).items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            if name in executable:
                os.chmod(path, 0o755)
        return folder

    def scan(self) -> SourceScan:
        return FolderScanner("test", self.root).scan()

    def job(self, job_id: str) -> JobSpec:
        """The loaded job `job_id`; fails the test with the diagnostics if it is invalid."""
        result = self.scan()
        for job in result.jobs:
            if job.id == job_id:
                return job
        raise AssertionError(f"{job_id} not loaded; invalid: {result.invalid}")

    def invalid(self, job_id: str) -> InvalidJob:
        """The invalid entry `job_id`; fails the test if it loaded."""
        result = self.scan()
        for bad in result.invalid:
            if bad.id == job_id:
                return bad
        raise AssertionError(f"{job_id} is not invalid; jobs: {[j.id for j in result.jobs]}")

    def reasons(self, job_id: str) -> list[str]:
        return [d.reason for d in self.invalid(job_id).diagnostics]


@pytest.fixture
def jobs_tree(tmp_path: Path) -> JobsTree:
    root = tmp_path / "jobs"
    root.mkdir()
    return JobsTree(root)
