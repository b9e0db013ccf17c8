"""The status line at the bottom of every screen: which server, and whether it answers."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    """Shows the app's `connection` text; styled as a warning while the server is gone or
    refuses the token (the `-down` class)."""

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._show, init=True)

    def _show(self, text: str) -> None:
        ok = getattr(self.app, "connected", True)
        server = getattr(self.app, "server_label", "")
        self.set_class(not ok, "-down")
        self.update(f"{server}  {'●' if ok else '✖'} {text}")
