"""A stored journal row and how it expands into events.

Most rows are one event. A `run.output` row is a chunk of output lines sharing one row:
line `i` of it is the event `id + i`. Lines are split only when served.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flwd.models import Event, LogLine

OUTPUT = "run.output"


class Record:
    __slots__ = ("_events", "data", "id", "job_id", "last_id", "run_id", "text", "ts", "type")

    def __init__(
        self,
        *,
        id: int,
        last_id: int,
        run_id: str,
        job_id: str,
        type: str,
        ts: datetime,
        data: dict[str, Any],
        text: str | None = None,
    ) -> None:
        self.id = id
        self.last_id = last_id
        self.run_id = run_id
        self.job_id = job_id
        self.type = type
        self.ts = ts
        self.data = data
        self.text = text
        self._events: list[Event] | None = None

    def events(self) -> list[Event]:
        """The events this row holds, in id order (computed once, shared by subscribers)."""
        if self._events is None:
            if self.type == OUTPUT and self.text is not None:
                self._events = [
                    Event(
                        id=self.id + i,
                        type=OUTPUT,
                        run_id=self.run_id,
                        job_id=self.job_id,
                        timestamp=self.ts,
                        data={**self.data, "message": line},
                    )
                    for i, line in enumerate(self.text.split("\n"))
                ]
            else:
                self._events = [
                    Event(
                        id=self.id,
                        type=self.type,
                        run_id=self.run_id,
                        job_id=self.job_id,
                        timestamp=self.ts,
                        data=self.data,
                    )
                ]
        return self._events

    def iter_events(self, after: int = 0) -> Iterator[Event]:
        """The events with id > `after`, made one at a time and not kept (unless
        `events()` already made them): a replay holds only what it is sending."""
        if self._events is not None or self.type != OUTPUT or self.text is None:
            yield from (event for event in self.events() if event.id > after)
            return
        skip = max(0, after - self.id + 1)
        for i, line in enumerate(_lines(self.text, skip), start=skip):
            yield Event(
                id=self.id + i,
                type=OUTPUT,
                run_id=self.run_id,
                job_id=self.job_id,
                timestamp=self.ts,
                data={**self.data, "message": line},
            )

    def log_lines(self, *, after: int = 0, limit: int | None = None) -> list[LogLine]:
        """The log lines with id > `after`, at most `limit` of them."""
        if self.type != OUTPUT or self.text is None:
            return []
        level = str(self.data.get("level", "info"))
        step_id = self.data.get("step_id")
        skip = max(0, after - self.id + 1)
        lines = _lines(self.text, skip)
        if limit is not None:
            lines = itertools.islice(lines, limit)
        return [
            LogLine(id=self.id + i, timestamp=self.ts, level=level, message=line, step_id=step_id)
            for i, line in enumerate(lines, start=skip)
        ]


def _lines(text: str, skip: int) -> Iterator[str]:
    """The lines of a chunk, from line `skip` on, split lazily."""
    start = 0
    for _ in range(skip):
        start = text.find("\n", start) + 1
        if start == 0:
            return
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1
