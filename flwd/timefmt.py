"""How flwd writes a time as text: one format for the store, events and answers.

A neutral module (it imports nothing of flwd), so that `storage`, `events` and `engine`
format times alike without importing one another.
"""

from __future__ import annotations

from datetime import datetime, timedelta

_ZERO = timedelta(0)


def iso(ts: datetime) -> str:
    """`2026-11-29T14:53:24.564741Z` for a UTC time (always with microseconds)."""
    if ts.microsecond and ts.utcoffset() == _ZERO:
        return ts.isoformat()[:-6] + "Z"  # the quick way: no keyword to parse
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")
