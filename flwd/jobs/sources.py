"""Job source types: how a configured source (`--jobs NAME=PATH`) is scanned and watched.

A plugin contributes source types through the `register_source_types` hook. The built-in
`fs` type (`flwd.jobs.fs_source`) reads job folders from a directory; another type could
read a git repository or an object store, as long as it produces the same `SourceScan`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Collection

from flwd.jobs.scanner import SourceScan
from flwd.settings import JobSource

__all__ = ["OpenSource", "SourceScan", "SourceType"]


class OpenSource(abc.ABC):
    """One configured source, opened by its `SourceType`; owned by a `JobRegistry`.

    It may keep state between scans (the `fs` type caches folders it has loaded) and is
    used from one thread at a time.
    """

    def __init__(self, source: JobSource) -> None:
        self.source = source

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the jobs come from, for people (an absolute path for `fs`)."""

    @abc.abstractmethod
    def scan(self, changed: Collection[str] | None = None) -> SourceScan:
        """Every job and invalid job folder of the source, now. Synchronous and pure: it
        may be run in a worker thread. `changed` lists what a watcher reported changed
        (a hint for incremental work); None means "assume everything changed"."""

    @abc.abstractmethod
    def watch(self, stop: asyncio.Event) -> AsyncIterator[set[str]]:
        """Yield sets of changed locations until `stop` is set; each yield makes the
        registry call `scan(changed)` and swap the catalog if the result differs.
        Must not end on its own while the source is usable; raising reports the watcher
        unhealthy (it is restarted after a pause)."""


class SourceType(abc.ABC):
    """A kind of job source, such as `fs`. Registered through `register_source_types`."""

    #: The value of `type` in a source's configuration that selects this implementation.
    type: str

    @abc.abstractmethod
    def open(self, source: JobSource) -> OpenSource:
        """Prepare `source` for scanning and watching. Must not fail for a source whose
        location is missing: that is reported by `scan` as a diagnostic."""
