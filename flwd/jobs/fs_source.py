"""The built-in `fs` source type: job folders in a directory, watched with `watchfiles`.

Registered as a plugin (`register_source_types`) like any extension's source type.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection

import watchfiles

from flwd.hookspecs import hookimpl
from flwd.jobs.scanner import FolderScanner, SourceScan
from flwd.jobs.sources import OpenSource, SourceType
from flwd.settings import JobSource

#: watchfiles yields once nothing has changed for STEP_MS; DEBOUNCE_MS caps how long a
#: burst of changes (a `git pull`) is collected. Together they bound reload latency.
STEP_MS = 50
DEBOUNCE_MS = 300
#: While a source directory does not exist, how often to look again besides events.
ROOT_POLL_MS = 500


class FsSource(OpenSource):
    """A directory of job folders."""

    def __init__(self, source: JobSource) -> None:
        super().__init__(source)
        self._root = os.path.abspath(source.path)
        self._scanner = FolderScanner(source.name, self._root)

    @property
    def location(self) -> str:
        return self._root

    def scan(self, changed: Collection[str] | None = None) -> SourceScan:
        return self._scanner.scan(changed)

    async def watch(self, stop: asyncio.Event) -> AsyncIterator[set[str]]:
        while not stop.is_set():
            if not os.path.isdir(self._root):
                # Watch the nearest existing parent until the root appears, so a source
                # created after start-up is picked up without a restart.
                await self._wait_for_root(stop)
                if stop.is_set():
                    return
                yield {self._root}
                continue
            async for changes in watchfiles.awatch(
                self._root,
                stop_event=stop,
                step=STEP_MS,
                debounce=DEBOUNCE_MS,
                recursive=True,
                ignore_permission_denied=True,
            ):
                yield {path for _, path in changes}
                if not os.path.isdir(self._root):
                    break  # the root itself went away: go back to waiting for it

    async def _wait_for_root(self, stop: asyncio.Event) -> None:
        """Return once the root exists (or `stop` is set). Watches the nearest existing
        ancestor; the periodic wake-up covers levels created between two watches."""
        while not stop.is_set() and not os.path.isdir(self._root):
            ancestor = _nearest_existing(self._root)
            async for _ in watchfiles.awatch(
                ancestor,
                stop_event=stop,
                step=STEP_MS,
                debounce=DEBOUNCE_MS,
                recursive=False,
                rust_timeout=ROOT_POLL_MS,
                yield_on_timeout=True,
            ):
                if os.path.isdir(self._root) or _nearest_existing(self._root) != ancestor:
                    break


def _nearest_existing(path: str) -> str:
    parent = os.path.dirname(path)
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    return parent


class FsSourceType(SourceType):
    """Job folders on the local file system (`--jobs NAME=PATH`)."""

    type = "fs"

    def open(self, source: JobSource) -> OpenSource:
        return FsSource(source)


@hookimpl(trylast=True)
def register_source_types() -> list[SourceType]:
    """The built-in `fs` source type."""
    return [FsSourceType()]
