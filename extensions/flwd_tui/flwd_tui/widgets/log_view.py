"""The run screen's log: the lines of its `LogWindow`, stdout plain, stderr marked and in
red, flwd's own notes (the head/tail cut) highlighted across the width.

A `ScrollView` drawing only the rows on screen (Textual's line API), so showing or
replacing a window of thousands of lines costs the same as showing one screenful."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from flwd.models import LogLine
from flwd_tui.logwindow import WINDOW_LINES, is_marker

STEP_WIDTH = 9
#: Rendered rows kept for redraws while scrolling.
CACHE_ROWS = 512


def render_line(line: LogLine, highlight: str = "") -> Text:
    step = f"{line.step_id:<8.8} " if line.step_id else ""
    if is_marker(line):
        # (spans, not a base style: `Text.render` leaves a base style to its caller)
        text = Text()
        text.append(f"{step}── {line.message} ──", style="bold #000000 on #d7af00")
    elif line.level == "error":
        text = Text()
        text.append(step, style="dim")
        text.append("! ", style="bold red")
        text.append(line.message, style="red")
    else:
        text = Text()
        text.append(step, style="dim")
        text.append("  " + line.message)
    if highlight:
        text.highlight_words([highlight], style="reverse", case_sensitive=False)
    return text


class LogView(ScrollView, can_focus=True):
    """Shows a list of log lines (at most `max_lines`; the oldest go first)."""

    def __init__(self, *, max_lines: int = WINDOW_LINES, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self.lines: list[LogLine] = []
        self.highlight = ""
        self._widest = 0
        self._rows: OrderedDict[int, Strip] = OrderedDict()

    def _measure(self, line: LogLine) -> int:
        return len(line.message) + STEP_WIDTH + 6

    def _resize(self) -> None:
        self.virtual_size = Size(self._widest, len(self.lines))

    def show(self, lines: Iterable[LogLine], highlight: str = "", scroll_end: bool = True) -> None:
        """Replace the lines; `highlight` marks a searched-for text."""
        self.lines = list(lines)[-self.max_lines :]
        self.highlight = highlight
        self._widest = max((self._measure(line) for line in self.lines), default=0)
        self._rows.clear()
        self._resize()
        self.refresh()
        if scroll_end:
            self.scroll_end(animate=False)

    def add(self, line: LogLine, follow: bool) -> None:
        """One more line at the end; scrolled to when `follow`."""
        self.lines.append(line)
        if len(self.lines) > self.max_lines:
            del self.lines[0]
            self._rows.clear()  # row numbers moved
        self._widest = max(self._widest, self._measure(line))
        self._resize()
        self.refresh()
        if follow:
            self.scroll_end(animate=False)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        strip = self._rows.get(index)
        if strip is None:
            text = render_line(self.lines[index], self.highlight)
            segments = [Segment(s.text, s.style) for s in text.render(self.app.console, end="")]
            strip = Strip(segments).apply_style(self.rich_style)
            self._rows[index] = strip
            if len(self._rows) > CACHE_ROWS:
                self._rows.popitem(last=False)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
