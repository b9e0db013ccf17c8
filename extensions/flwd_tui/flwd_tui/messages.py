"""Messages the app sends its screens: what the server's streams said, and how the
connection to it is."""

from __future__ import annotations

from textual.message import Message

from flwd.api.schemas import JobsChanged
from flwd.models import Event


class RunEventReceived(Message):
    """One event of the global run stream (`/events/runs`), sent to every open screen."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class CatalogChanged(Message):
    """Hot reload changed the job catalogue (a `jobs.changed` event), or the stream of
    those changes (re)connected and the catalogue must be read again (`change` None)."""

    def __init__(self, change: JobsChanged | None) -> None:
        super().__init__()
        self.change = change


class ConnectionChanged(Message):
    """The server answered again (`ok`), or cannot be reached, or refuses the token:
    `detail` says which, for the status line."""

    def __init__(self, ok: bool, detail: str) -> None:
        super().__init__()
        self.ok = ok
        self.detail = detail
