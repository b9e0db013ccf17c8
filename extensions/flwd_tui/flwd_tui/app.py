"""The Textual app of `flwd tui`: its screens, the server's live streams, the status line
and the command palette.

Everything goes through `FlwdClient`, so the app works against a remote server as well as
the local one. Two streams live as long as the app: the run events (`/events/runs`,
resumed from the last event id after any failure) and the catalogue changes
(`/events/jobs`, after which the catalogue is read again); each open run screen follows
its run's log on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget

from flwd.api.schemas import JobsChanged
from flwd.client import FlwdClient
from flwd.errors import FlwdError
from flwd.models import Event
from flwd_tui.connection import StreamKeeper, describe_failure
from flwd_tui.messages import CatalogChanged, ConnectionChanged, RunEventReceived
from flwd_tui.screens.help import HelpScreen
from flwd_tui.screens.jobs import JobsScreen
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.runs import RunsScreen


class FlwdTui(App[None]):
    """`client` is open for the app's life (the caller closes it); `live=False` starts no
    streams (the screenshots are rendered from fixed data); `clock` gives "now" for the
    durations of what still runs."""

    CSS_PATH = "app.tcss"
    TITLE = "flwd"
    MODES = {"jobs": JobsScreen, "runs": RunsScreen}
    BINDINGS = [
        Binding("j", "show_jobs", "Jobs"),
        Binding("r", "show_runs", "Runs"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    connection: reactive[str] = reactive("connecting…")
    connected: reactive[bool] = reactive(False)

    def __init__(
        self,
        client: FlwdClient,
        *,
        server_label: str = "",
        live: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.server_label = server_label or client.base_url
        self.live = live
        self.clock = clock or (lambda: datetime.now(UTC))
        self._listeners: set[Widget] = set()
        # A failed stream re-opens itself: the client gives up early and says so.
        client.max_reconnects = 1

    def on_mount(self) -> None:
        self.switch_mode("jobs")
        if not self.live:
            self.connected = True
            self.connection = "not following the server's streams"
        if self.live:
            self.run_worker(self._follow_runs(), name="run-events", group="streams")
            self.run_worker(self._follow_catalog(), name="catalog", group="streams")

    # -- listeners: screens that want the streams' news --------------------------------

    def subscribe(self, widget: Widget) -> None:
        self._listeners.add(widget)

    def unsubscribe(self, widget: Widget) -> None:
        self._listeners.discard(widget)

    def broadcast(self, make: Callable[[], object]) -> None:
        for widget in list(self._listeners):
            message = make()
            widget.post_message(message)  # type: ignore[arg-type]

    # -- the connection --------------------------------------------------------------

    def report(self, ok: bool, detail: str) -> None:
        """Set the status line (every screen's `StatusLine` shows it)."""
        changed = ok != self.connected
        self.connected = ok
        self.connection = detail
        if changed:  # screens re-read what may have changed while the server was away
            self.broadcast(lambda: ConnectionChanged(ok, detail))

    def report_failure(self, exc: FlwdError) -> None:
        """A request failed: unreachable or refused goes to the status line, anything
        else (a missing run, a conflict) is a notification."""
        if exc.status in (0, 401, 403) or exc.status >= 500:
            self.report(False, describe_failure(exc))
        self.notify(exc.detail, title="error", severity="error", timeout=6)

    async def _follow_runs(self) -> None:
        def deliver(event: Event) -> None:
            # Output lines reach a run screen through its own log stream; passing every
            # line of every run to every screen would only cost.
            if event.type != "run.output":
                self.broadcast(lambda: RunEventReceived(event))

        keeper: StreamKeeper[Event] = StreamKeeper(
            lambda since: self.client.stream_events(since=since),
            lambda event: event.id,
            deliver,
            self.report,
            open_check=self.client.health,
        )
        await keeper.run()

    async def _follow_catalog(self) -> None:
        def deliver(change: JobsChanged) -> None:
            self.broadcast(lambda: CatalogChanged(change))

        def reread() -> None:
            # Changes made while the stream was down are not replayed: read it all again.
            self.broadcast(lambda: CatalogChanged(None))

        keeper: StreamKeeper[JobsChanged] = StreamKeeper(
            lambda since: self.client.follow_jobs(),
            lambda change: None,
            deliver,
            self.report,
            open_check=self.client.health,
            on_connect=reread,
        )
        await keeper.run()

    # -- actions ---------------------------------------------------------------------

    def action_show_jobs(self) -> None:
        self.switch_mode("jobs")

    def action_show_runs(self) -> None:
        self.switch_mode("runs")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def open_run(self, run_id: str) -> None:
        """Show one run (from the runs screen, or after the form started it)."""
        self.push_screen(RunScreen(run_id))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette offers every action bound on the current screen and the app."""
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for node, binding, enabled, _tooltip in screen.active_bindings.values():
            if not enabled or not binding.description or binding.action in seen:
                continue
            if binding.action in ("quit", "command_palette"):
                continue
            seen.add(binding.action)
            key = binding.key_display or binding.key

            async def run(action: str = binding.action, target: object = node) -> None:
                await self.run_action(action, target)  # type: ignore[arg-type]

            yield SystemCommand(binding.description, f"{binding.description} (key {key})", run)
