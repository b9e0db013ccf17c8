"""What every screen of the app shares: the typed app, the subscription to the app's
streams while mounted, and the status line."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from flwd_tui.app import FlwdTui


class TuiScreen(Screen[None]):
    @property
    def tui(self) -> FlwdTui:
        return cast("FlwdTui", self.app)

    def on_mount(self) -> None:
        self.tui.subscribe(self)

    def on_unmount(self) -> None:
        self.tui.unsubscribe(self)
