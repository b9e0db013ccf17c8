"""Admission of runs: a global concurrency limit, per-job limits (optionally per key),
FIFO waiting, and a maximum queue depth.

Slots live only in memory and only while their run is being executed by this process:
a run holds one from the moment it is dispatched until its terminal state is written.
After a crash nothing is held; recovery turns the rows it finds `running` into `lost` and
re-queues `pending` ones, so no slot can leak.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from flwd.engine.active_run import ActiveRun
from flwd.errors import QueueFull

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def concurrency_key(template: str | None, args: Mapping[str, Any]) -> str | None:
    """Fill `{name}` placeholders with top-level argument values (nothing else is
    interpreted, so a template cannot reach attributes or call anything)."""
    if template is None:
        return None
    return _PLACEHOLDER.sub(lambda m: str(args.get(m.group(1), "")), template)


class Scheduler:
    def __init__(
        self, *, max_concurrency: int, max_queue: int, start: Callable[[ActiveRun], None]
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._start = start
        self._queue: deque[ActiveRun] = deque()
        self._running: dict[str, ActiveRun] = {}
        self._per_key: Counter[tuple[str, str | None]] = Counter()
        self._closed = False

    def close(self) -> None:
        """Start no more runs (the engine is shutting down; queued runs stay pending)."""
        self._closed = True

    def check_capacity(self) -> None:
        """Raise `QueueFull` if a new run could not even wait."""
        if len(self._queue) >= self.max_queue and self._free_global() == 0:
            raise QueueFull(len(self._queue), retry_after=self._retry_after())

    def submit(self, active: ActiveRun) -> None:
        self._queue.append(active)
        self._dispatch()

    def remove_pending(self, run_id: str) -> ActiveRun | None:
        for active in self._queue:
            if active.run.run_id == run_id:
                self._queue.remove(active)
                return active
        return None

    def release(self, run_id: str) -> None:
        active = self._running.pop(run_id, None)
        if active is not None:
            self._per_key[_slot(active)] -= 1
        self._dispatch()

    @property
    def running_count(self) -> int:
        return len(self._running)

    def running(self) -> list[ActiveRun]:
        return list(self._running.values())

    def pending(self) -> list[ActiveRun]:
        return list(self._queue)

    def get(self, run_id: str) -> ActiveRun | None:
        found = self._running.get(run_id)
        if found is None:
            found = next((a for a in self._queue if a.run.run_id == run_id), None)
        return found

    def _free_global(self) -> int:
        return self.max_concurrency - len(self._running)

    def _retry_after(self) -> int:
        return max(1, min(60, len(self._queue) // max(1, self.max_concurrency)))

    def _dispatch(self) -> None:
        # FIFO among runs that may start: a run held back by its job's limit does not
        # block runs of other jobs queued behind it.
        if self._closed or not self._queue or self._free_global() <= 0:
            return
        for active in list(self._queue):
            if self._free_global() <= 0:
                break
            limit = active.job.concurrency.limit if active.job.concurrency else None
            slot = _slot(active)
            if limit is not None and self._per_key[slot] >= limit:
                continue
            self._queue.remove(active)
            self._running[active.run.run_id] = active
            self._per_key[slot] += 1
            self._start(active)


def _slot(active: ActiveRun) -> tuple[str, str | None]:
    return (active.job.id, active.concurrency_key)
