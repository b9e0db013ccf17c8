"""Plugin fan-out: every committed journal event goes to the plugins' `run_event` hook."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pluggy

from flwd.events.records import Record

log = logging.getLogger(__name__)


def run_event_listener(pm: pluggy.PluginManager) -> Callable[[list[Record]], None] | None:
    """The journal listener that tells the plugins of each committed event, in id order,
    or None when no plugin implements `run_event` (the engine then skips the work). A
    failing hook is logged and affects neither the run nor the other plugins' calls."""
    if not pm.hook.run_event.get_hookimpls():
        return None

    def notify_plugins(records: list[Record]) -> None:
        for record in records:
            for event in record.events():
                try:
                    pm.hook.run_event(event=event)
                except Exception:
                    log.exception("a run_event hook failed for event %s", event.id)

    return notify_plugins
