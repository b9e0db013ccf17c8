"""The run screen's log: the lines of its `LogWindow`, stdout plain, stderr marked and in
red, flwd's own notes (the head/tail cut) highlighted across the width."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from flwd.models import LogLine
from flwd_tui.logwindow import is_marker


def render_line(line: LogLine, highlight: str = "") -> Text:
    step = f"{line.step_id:<8.8} " if line.step_id else ""
    if is_marker(line):
        text = Text(f"{step}── {line.message} ──", style="bold black on yellow")
    elif line.level == "error":
        text = Text(step, style="dim")
        text.append("! ", style="bold red")
        text.append(line.message, style="red")
    else:
        text = Text(step, style="dim")
        text.append("  " + line.message)
    if highlight:
        text.highlight_words([highlight], style="reverse", case_sensitive=False)
    return text


class LogView(RichLog):
    """A `RichLog` that is always rewritten from a window of lines (never unbounded)."""

    def show(self, lines: Iterable[LogLine], highlight: str = "", scroll_end: bool = True) -> None:
        self.clear()
        for line in lines:
            self.write(render_line(line, highlight), scroll_end=False)
        if scroll_end:
            self.scroll_end(animate=False)

    def add(self, line: LogLine, follow: bool) -> None:
        self.write(render_line(line), scroll_end=follow)
