"""A log handler that lets a repeated line through once per interval and counts the rest.

Warnings and errors only: informational lines (the access log, when on) are all written.
Under a flood (a burst of refused requests, the accept loop failing once the process has
no file descriptor left) the same line would otherwise be written thousands of times a
second. Records are "the same" when they come from the same logger at the same level with
the same message template (its first line: asyncio appends changing details below it).
The first such record of an interval is written; the others are counted, and the count is
written once the interval is over, before the next line: `suppressed 812 similar lines in
the last 10s: refused %s %s from %s: %s`.

Running out of descriptors (EMFILE/ENFILE) is a condition, not a bug: its records are
written without their traceback.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TextIO

INTERVAL = 10.0
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})
Key = tuple[str, int, str]


class _Window:
    __slots__ = ("record", "started", "suppressed")

    def __init__(self, started: float, record: logging.LogRecord) -> None:
        self.started = started
        self.suppressed = 0
        self.record = record


def out_of_descriptors(exc: BaseException | None) -> bool:
    """True for the error a process gets when it (or the system) has no descriptor left."""
    return isinstance(exc, OSError) and exc.errno in _EXHAUSTED


class ThrottledHandler(logging.StreamHandler[TextIO]):
    """A stream handler writing each kind of line at `floor` level or above (warnings and
    errors) at most once per `interval` seconds; lower levels pass as they are."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = INTERVAL,
        floor: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.interval = interval
        self.floor = floor
        self.clock = clock
        self.windows: dict[Key, _Window] = {}

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.floor:  # e.g. the access log: every line is wanted
            return super().handle(record)
        now = self.clock()
        self._summarise(now)
        key = (record.name, record.levelno, str(record.msg).split("\n", 1)[0])
        window = self.windows.get(key)
        if window is not None:
            window.suppressed += 1
            return False
        self.windows[key] = _Window(now, record)
        if record.exc_info and out_of_descriptors(record.exc_info[1]):
            record.msg = f"{record.msg}: {record.exc_info[1]}"
            record.exc_info = None
            record.exc_text = None
        return super().handle(record)

    def _summarise(self, now: float) -> None:
        """Forget the windows that are over; say how many lines each one held back."""
        expired = [k for k, w in self.windows.items() if now - w.started >= self.interval]
        for key in expired:
            window = self.windows.pop(key)
            if window.suppressed:
                first = window.record
                summary = logging.LogRecord(
                    first.name,
                    first.levelno,
                    first.pathname,
                    first.lineno,
                    "suppressed %d similar lines in the last %gs: %s",
                    (window.suppressed, self.interval, key[2][:200]),
                    None,
                )
                super().handle(summary)


def install(level: int = logging.INFO, fmt: str | None = None) -> ThrottledHandler:
    """Make a `ThrottledHandler` on stderr the root logger's only handler."""
    handler = ThrottledHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
