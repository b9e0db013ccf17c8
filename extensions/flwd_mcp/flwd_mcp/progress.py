"""Progress of a run as MCP progress notifications: from step events, and from the lines
a job prints in the progress-line convention (docs/mcp.md):

    ::progress 40/100 copying files
    ::progress 40% copying files

Progress is reported in percent of the whole run (`total` 100): each finished step adds
its share (`100 / steps`), and a progress line moves within the share of the step that
printed it. The protocol requires the value to grow, so a report lower than the last one
sent is not sent.
"""

from __future__ import annotations

import re
from typing import Final

from flwd.models import Event

_LINE: Final = re.compile(
    r"^::progress\s+(?:(?P<done>\d+(?:\.\d+)?)\s*/\s*(?P<of>\d+(?:\.\d+)?)|(?P<pct>\d+(?:\.\d+)?)%)"
    r"(?:\s+(?P<message>.*))?$"
)
TOTAL: Final = 100.0


def parse_progress_line(line: str) -> tuple[float, str | None] | None:
    """The fraction (0..1) and message of a progress line, or None for any other line."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    if match["pct"] is not None:
        fraction = float(match["pct"]) / 100
    else:
        of = float(match["of"])
        fraction = float(match["done"]) / of if of > 0 else 0.0
    return min(max(fraction, 0.0), 1.0), match["message"] or None


class RunProgress:
    """Turns a run's events into `(progress, total, message)` reports."""

    def __init__(self, steps: int) -> None:
        self.steps = max(steps, 1)
        self.finished = 0
        self.sent = -1.0

    def _report(self, value: float, message: str | None) -> tuple[float, float, str | None] | None:
        value = round(min(value, TOTAL), 2)
        if value <= self.sent:
            return None
        self.sent = value
        return value, TOTAL, message

    def update(self, event: Event) -> tuple[float, float, str | None] | None:
        """The report this event makes, or None."""
        share = TOTAL / self.steps
        step = event.data.get("step_id")
        if event.type == "step.started":
            return self._report(self.finished * share, f"step {step} started")
        if event.type == "step.finished":
            self.finished += 1
            status = event.data.get("status", "finished")
            return self._report(self.finished * share, f"step {step} {status}")
        if event.type == "run.output":
            report = None
            for line in str(event.data.get("message", "")).splitlines():
                parsed = parse_progress_line(line)
                if parsed is not None:
                    fraction, message = parsed
                    value = (min(self.finished, self.steps - 1) + fraction) * share
                    report = self._report(value, message) or report
            return report
        return None
