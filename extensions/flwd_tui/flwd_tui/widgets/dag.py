"""A run's steps drawn as their DAG: one line per step in dependency order, indented by
its depth (the longest chain of `needs` above it), with its state, attempt and duration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from flwd.models import Step

STATUS_STYLE = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "success": ("✔", "green"),
    "failed": ("✖", "bold red"),
    "cancelled": ("■", "yellow"),
    "skipped": ("↷", "dim"),
}


def step_depths(needs: Mapping[str, Sequence[str]], order: Sequence[str]) -> dict[str, int]:
    """Each step's depth: 0 without needs, else 1 + the deepest step it needs (cycles and
    unknown names, which a valid job cannot have, count as depth 0)."""
    depths: dict[str, int] = {}

    def depth(step: str, seen: frozenset[str]) -> int:
        if step in depths:
            return depths[step]
        parents = [p for p in needs.get(step, ()) if p in order and p not in seen]
        value = 1 + max((depth(p, seen | {step}) for p in parents), default=-1)
        depths[step] = value
        return value

    for step in order:
        depth(step, frozenset())
    return depths


def duration(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    if start is None:
        return ""
    stop = end or now
    if stop is None:
        return "…"
    seconds = (stop - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def render_dag(
    steps: Sequence[Step], needs: Mapping[str, Sequence[str]], now: datetime | None = None
) -> Text:
    order = [step.step_id for step in steps]
    depths = step_depths(needs, order)
    ranked = sorted(steps, key=lambda s: (depths.get(s.step_id, 0), order.index(s.step_id)))
    text = Text()
    for step in ranked:
        icon, style = STATUS_STYLE.get(str(step.status), ("?", ""))
        depth = depths.get(step.step_id, 0)
        text.append("  " * depth + ("└▶ " if depth else ""), style="dim")
        text.append(f"{icon} {step.step_id}", style=style)
        text.append(f"  {step.status}", style=style)
        if step.attempt > 1:
            text.append(f" (attempt {step.attempt})", style="dim")
        took = duration(step.started_at, step.finished_at, now)
        if took:
            text.append(f"  {took}", style="dim")
        if step.exit_code not in (None, 0):
            text.append(f"  exit {step.exit_code}", style="red")
        parents = needs.get(step.step_id, ())
        if parents:
            text.append(f"  ← {', '.join(parents)}", style="dim italic")
        text.append("\n")
    if not steps:
        text.append("(no steps yet)", style="dim")
    return text


class StepGraph(Static):
    """The steps panel of the run screen."""

    def show(
        self, steps: Sequence[Step], needs: Mapping[str, Sequence[str]], now: datetime | None
    ) -> None:
        self.update(render_dag(steps, needs, now))
