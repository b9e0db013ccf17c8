"""The bounded window of a run's log the run screen shows.

A run may have a million stored lines; the screen holds at most `size` of them, a
contiguous stretch of the stored log. `at_head` says the window starts at the log's first
line, `at_tail` that it reaches its last one — then live lines are appended (following),
and the oldest let go of. Moving the window is the caller's job (it asks the API for the
lines: `tail`, `since`, `FlwdClient.logs_before`); this class only keeps the lines and the
flags straight, so it is tested without a server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from flwd.models import LogLine

#: Lines held at once, and lines fetched when the user scrolls past either end.
WINDOW_LINES = 2000
PAGE_LINES = 500

#: flwd's own notes in a log (cut lines, the head/tail cut) are lines of level `warning`
#: starting with this.
MARKER_PREFIX = "[flwd:"


def is_marker(line: LogLine) -> bool:
    return line.level == "warning" and line.message.startswith(MARKER_PREFIX)


class LogWindow:
    def __init__(self, size: int = WINDOW_LINES) -> None:
        self.size = size
        self.lines: deque[LogLine] = deque()
        self.at_head = True
        self.at_tail = True
        #: live lines that arrived while the window was away from the end
        self.held: deque[LogLine] = deque(maxlen=size)

    @property
    def first_id(self) -> int | None:
        return self.lines[0].id if self.lines else None

    @property
    def last_id(self) -> int | None:
        return self.lines[-1].id if self.lines else None

    def reset_tail(self, lines: list[LogLine], asked: int) -> None:
        """The window is the log's last lines (`tail=asked` answered `lines`)."""
        self.lines = deque(lines[-self.size :])
        self.at_tail = True
        self.at_head = len(lines) < asked

    def reset_head(self, lines: list[LogLine], asked: int) -> None:
        """The window is the log's first lines (`limit=asked` from the start)."""
        self.lines = deque(lines[: self.size])
        self.at_head = True
        self.at_tail = len(lines) < asked

    def append_live(self, line: LogLine) -> bool:
        """A line the follow stream delivered; kept (True) only while following and only
        once (a line at or below the window's last id is already here)."""
        if not self.at_tail:
            return False
        if self.lines and line.id <= self.lines[-1].id:
            return False
        self.lines.append(line)
        if len(self.lines) > self.size:
            self.lines.popleft()
            self.at_head = False
        return True

    def take_live(self, line: LogLine) -> bool:
        """A line the follow stream delivered: appended while following (True), else held
        until the window is back at the end (`catch_up`)."""
        if self.append_live(line):
            return True
        if not self.at_tail:
            self.held.append(line)
        return False

    def catch_up(self) -> int:
        """Once the window reaches the end again (`extend`, `reset_tail`), add the live
        lines held meanwhile that it does not have; when more came than could be held,
        stop short of the end instead (the next page down fetches the rest). Returns how
        many lines were added."""
        held, self.held = list(self.held), deque(maxlen=self.size)
        if not self.at_tail or not held:
            return 0
        last = self.last_id or 0
        if len(held) == self.size and held[0].id > last + 1:
            self.at_tail = False  # maybe a gap between the page and what was held
            return 0
        return sum(self.append_live(line) for line in held if line.id > last)

    def prepend(self, older: Iterable[LogLine], asked: int) -> int:
        """Lines just before the window (`logs_before` answered them); the newest fall
        out at the other end, which ends following. Returns how many were added."""
        older = [line for line in older if self.first_id is None or line.id < self.first_id]
        if len(older) < asked:
            self.at_head = True
        self.lines.extendleft(reversed(older))
        while len(self.lines) > self.size:
            self.lines.pop()
            self.at_tail = False
        return len(older)

    def extend(self, newer: Iterable[LogLine], asked: int) -> int:
        """Lines just after the window (`since=last_id&limit=asked`); reaching the end of
        the stored log (a short page) resumes following. Returns how many were added."""
        newer = [line for line in newer if self.last_id is None or line.id > self.last_id]
        self.lines.extend(newer)
        while len(self.lines) > self.size:
            self.lines.popleft()
            self.at_head = False
        if len(newer) < asked:
            self.at_tail = True
        return len(newer)

    def search(self, text: str, start: int, backwards: bool = False) -> int | None:
        """Index of the next line (from `start`, wrapping) whose message holds `text`,
        case-insensitively; None when no line in the window does."""
        if not text or not self.lines:
            return None
        needle = text.lower()
        count = len(self.lines)
        step = -1 if backwards else 1
        for offset in range(1, count + 1):
            index = (start + step * offset) % count
            if needle in self.lines[index].message.lower():
                return index
        return None
