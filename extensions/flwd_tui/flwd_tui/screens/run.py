"""The run screen: the run's state, its steps as a DAG, its live log (a bounded window
paged from the API as the user scrolls past either end), its result and artifacts;
cancel (confirmed) and restart."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from flwd.errors import ArgumentsInvalid, FlwdError
from flwd.models import Artifact, LogLine, RunDetail
from flwd_tui.connection import StreamKeeper
from flwd_tui.logwindow import PAGE_LINES, WINDOW_LINES, LogWindow
from flwd_tui.messages import ConnectionChanged, RunEventReceived
from flwd_tui.screens.base import TuiScreen
from flwd_tui.screens.dialogs import ConfirmScreen, PathScreen
from flwd_tui.widgets.dag import StepGraph, duration
from flwd_tui.widgets.log_view import LogView
from flwd_tui.widgets.status_line import StatusLine

TERMINAL = {"success", "failed", "cancelled"}
STATUS_STYLE = {
    "running": "bold cyan",
    "success": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class RunScreen(TuiScreen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("1", "tab('log')", "Log", show=False),
        Binding("2", "tab('steps')", "Steps", show=False),
        Binding("3", "tab('result')", "Result", show=False),
        Binding("4", "tab('artifacts')", "Artifacts", show=False),
        Binding("G", "follow", "Follow/end"),
        Binding("g", "log_start", "Log start", show=False),
        Binding("slash", "search", "Search log", key_display="/"),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "previous_match", "Previous match", show=False),
        Binding("c", "cancel_run", "Cancel run"),
        Binding("R", "restart_run", "Restart"),
        Binding("d", "download", "Download artifact", show=False),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: RunDetail | None = None
        self.needs: dict[str, tuple[str, ...]] = {}
        self.window = LogWindow()
        self.needle = ""
        self.match = -1
        self.stale = False
        self.paging = False
        self.artifacts: list[Artifact] = []
        self.artifacts_shown: tuple[str, ...] | None = None
        # Made here, not looked up: the tabs mount their panes' widgets a little later.
        self.log_view = LogView(id="log-view", max_lines=WINDOW_LINES)
        self.search_box = Input(
            placeholder="search the log window (enter: next)", id="log-search", classes="-hidden"
        )
        self.position = Static("", id="log-position")
        self.header = Static(run_id, id="run-header", classes="screen-title")
        self.graph = StepGraph("", id="step-graph")
        self.result_view = Static("", id="result-view")
        self.artifact_table: DataTable[str] = DataTable(id="artifact-table", cursor_type="row")
        self.artifact_table.add_columns("name", "size", "type", "sha256")

    def compose(self) -> ComposeResult:
        yield self.header
        with TabbedContent(initial="log", id="run-tabs"):
            with TabPane("Log", id="log"):
                yield self.search_box
                yield self.position
                yield self.log_view
            with TabPane("Steps", id="steps"), VerticalScroll():
                yield self.graph
            with TabPane("Result", id="result"), VerticalScroll():
                yield self.result_view
            with TabPane("Artifacts", id="artifacts"):
                yield self.artifact_table
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.log_view, "scroll_y", self._scrolled)
        self.log_view.focus()
        self.refresh_run()
        self.open_log()
        if self.tui.live:
            self.set_interval(0.3, self._flush)

    # -- the run -------------------------------------------------------------------------

    @work(exclusive=True, group="run-detail")
    async def refresh_run(self) -> None:
        client = self.tui.client
        try:
            run = await client.get_run(self.run_id)
        except FlwdError as exc:
            self.tui.report_failure(exc)
            self.header.update(Text(exc.detail, style="red"))
            return
        if not self.needs:
            try:
                job = await client.get_job(run.job_id)
                self.needs = {step.id: step.needs for step in job.steps}
            except FlwdError:
                pass  # the job may be gone since; the steps still show, without edges
        with contextlib.suppress(FlwdError):
            self.artifacts = (await client.list_artifacts(run_id=self.run_id, limit=100)).artifacts
        self.show_run(run)

    def show_run(self, run: RunDetail) -> None:
        self.run = run
        now = self.tui.clock()
        header = Text(f"{run.run_id}  ", style="bold")
        header.append(str(run.status), style=STATUS_STYLE.get(str(run.status), "dim"))
        header.append(f"  {run.job_id}  tenant {run.tenant}")
        took = duration(run.started_at, run.finished_at, now)
        if took:
            header.append(f"  {took}")
        if run.exit_code is not None:
            header.append(f"  exit {run.exit_code}")
        if run.reason:
            header.append(f"  {run.reason}", style="red")
        if run.error:
            header.append(f"\n{run.error}", style="red")
        self.header.update(header)
        self.graph.show(run.steps, self.needs, now)
        self.result_view.update(self.result_text(run))
        shown = tuple(artifact.id for artifact in self.artifacts)
        if shown == self.artifacts_shown:
            return  # (redrawn only when it changed, so its cursor stays put)
        self.artifacts_shown = shown
        table = self.artifact_table
        table.clear()
        for artifact in self.artifacts:
            table.add_row(
                artifact.name,
                human_size(artifact.size_bytes),
                artifact.media_type,
                artifact.sha256[:12],
                key=artifact.id,
            )

    @staticmethod
    def result_text(run: RunDetail) -> Text:
        if run.result is None:
            if str(run.status) in TERMINAL:
                return Text("(no result)", style="dim")
            return Text("(the result comes when the run ends)", style="dim")
        body: dict[str, Any] = {"value": run.result.value}
        if run.result.steps:
            body["steps"] = run.result.steps
        return Text(json.dumps(body, indent=2, ensure_ascii=False))

    def on_run_event_received(self, message: RunEventReceived) -> None:
        if message.event.run_id == self.run_id and message.event.type != "run.output":
            self.stale = True

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        if message.ok:
            self.stale = True

    def _flush(self) -> None:
        if self.stale:
            self.stale = False
            self.refresh_run()
        elif self.run is not None and str(self.run.status) == "running":
            self.show_run(self.run)  # durations grow

    # -- the log ---------------------------------------------------------------------

    @work(exclusive=True, group="log")
    async def open_log(self) -> None:
        """The last lines, then the live ones after them."""
        try:
            lines = await self.tui.client.logs(self.run_id, tail=WINDOW_LINES)
        except FlwdError as exc:
            self.tui.report_failure(exc)
            return
        self.window.reset_tail(lines, WINDOW_LINES)
        self.render_window(scroll_end=True)
        if self.tui.live:
            self.follow_log(self.window.last_id)

    @work(exclusive=True, group="log-follow")
    async def follow_log(self, since: int | None) -> None:
        def deliver(line: LogLine) -> None:
            follow = self.log_view.is_vertical_scroll_end or self.log_view.max_scroll_y == 0
            if self.window.take_live(line):
                self.log_view.add(line, follow=follow)
                self.show_position()

        keeper: StreamKeeper[LogLine] = StreamKeeper(
            lambda after: self.tui.client.follow_logs(self.run_id, since=after),
            lambda line: line.id,
            deliver,
            self.tui.report,
            since=since,
        )
        await keeper.run(until_end=True)
        self.stale = True  # the run ended: its final state

    def render_window(self, *, scroll_end: bool = False, keep_line: int | None = None) -> None:
        self.log_view.show(self.window.lines, self.needle, scroll_end=scroll_end)
        if keep_line is not None:
            line = keep_line
            self.log_view.call_after_refresh(lambda: self.log_view.scroll_to(y=line, animate=False))
        self.show_position()

    def show_position(self) -> None:
        window = self.window
        text = Text(f"{len(window.lines)} lines in view", style="dim")
        if not window.at_head:
            text.append("  ↑ older lines: scroll up", style="dim")
        text.append(
            "  following" if window.at_tail else "  ↓ newer lines: scroll down / end", style="cyan"
        )
        if self.needle:
            text.append(f"  search: {self.needle}", style="yellow")
        self.position.update(text)

    def _scrolled(self, y: float) -> None:
        if self.paging or not self.window.lines:
            return
        view = self.log_view
        if y <= 0 and not self.window.at_head:
            self.page_older()
        elif y >= view.max_scroll_y and view.max_scroll_y > 0 and not self.window.at_tail:
            self.page_newer()

    @work(exclusive=True, group="log-page")
    async def page_older(self) -> None:
        first = self.window.first_id
        if first is None:
            return
        self.paging = True
        try:
            older = await self.tui.client.logs_before(self.run_id, first, PAGE_LINES)
            added = self.window.prepend(older, PAGE_LINES)
            self.render_window(keep_line=added)
        except FlwdError as exc:
            self.tui.report_failure(exc)
        finally:
            self.paging = False

    @work(exclusive=True, group="log-page")
    async def page_newer(self) -> None:
        last = self.window.last_id
        self.paging = True
        try:
            newer = await self.tui.client.logs(self.run_id, since=last, limit=PAGE_LINES)
            before = len(self.window.lines)
            added = self.window.extend(newer, PAGE_LINES)
            added += self.window.catch_up()
            dropped = before + added - len(self.window.lines)
            self.render_window(keep_line=max(int(self.log_view.scroll_y) - dropped, 0))
        except FlwdError as exc:
            self.tui.report_failure(exc)
        finally:
            self.paging = False

    def action_follow(self) -> None:
        self.action_tab("log")
        if self.window.at_tail:
            self.log_view.scroll_end(animate=False)
            self.show_position()
        else:
            self.jump_to_end()

    @work(exclusive=True, group="log-page")
    async def jump_to_end(self) -> None:
        self.paging = True
        try:
            lines = await self.tui.client.logs(self.run_id, tail=WINDOW_LINES)
            self.window.reset_tail(lines, WINDOW_LINES)
            self.window.catch_up()
            self.render_window(scroll_end=True)
        except FlwdError as exc:
            self.tui.report_failure(exc)
        finally:
            self.paging = False

    @work(exclusive=True, group="log-page")
    async def action_log_start(self) -> None:
        self.action_tab("log")
        self.paging = True
        try:
            lines = await self.tui.client.logs(self.run_id, limit=WINDOW_LINES)
            self.window.reset_head(lines, WINDOW_LINES)
            self.render_window()
            self.log_view.scroll_home(animate=False)
        except FlwdError as exc:
            self.tui.report_failure(exc)
        finally:
            self.paging = False

    def action_search(self) -> None:
        self.action_tab("log")
        box = self.search_box
        box.remove_class("-hidden")
        box.focus()

    @on(Input.Submitted, "#log-search")
    def _search(self, message: Input.Submitted) -> None:
        changed = message.value != self.needle
        self.needle = message.value
        if changed:
            self.match = len(self.window.lines) - 1 if self.window.at_tail else -1
            self.render_window()
        self.find(backwards=self.window.at_tail and changed)
        self.log_view.focus()

    def find(self, backwards: bool = False) -> None:
        index = self.window.search(self.needle, self.match, backwards=backwards)
        if index is None:
            if self.needle:
                self.notify(f"{self.needle!r} is not in the lines in view", timeout=3)
            return
        self.match = index
        self.log_view.scroll_to(y=max(index - 2, 0), animate=False)

    def action_next_match(self) -> None:
        self.find()

    def action_previous_match(self) -> None:
        self.find(backwards=True)

    # -- actions ---------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#run-tabs", TabbedContent).active = tab

    def action_back(self) -> None:
        search = self.search_box
        if search.has_focus:
            search.add_class("-hidden")
            self.log_view.focus()
            return
        self.dismiss()

    def action_cancel_run(self) -> None:
        if self.run is not None and str(self.run.status) in TERMINAL:
            self.notify(f"the run already ended ({self.run.status})", timeout=3)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel()

        self.app.push_screen(ConfirmScreen(f"Cancel run {self.run_id}?"), answered)

    @work(group="run-actions")
    async def cancel(self) -> None:
        self.notify("cancelling…", timeout=2)
        try:
            await self.tui.client.cancel_run(self.run_id)
        except FlwdError as exc:
            self.tui.report_failure(exc)
            return
        self.refresh_run()

    @work(group="run-actions")
    async def action_restart_run(self) -> None:
        try:
            run = await self.tui.client.restart_run(self.run_id)
        except ArgumentsInvalid as exc:
            # Secret arguments are not stored readable: they must be typed again.
            self.notify(f"{exc.detail}: give the arguments again", severity="warning")
            if self.run is not None:
                from flwd_tui.screens.run_form import RunFormScreen

                self.app.push_screen(RunFormScreen(self.run.job_id))
            return
        except FlwdError as exc:
            self.tui.report_failure(exc)
            return
        self.notify(f"restarted as {run.run_id}", timeout=3)
        self.dismiss()
        self.tui.open_run(run.run_id)

    def action_download(self) -> None:
        self.action_tab("artifacts")
        table = self.artifact_table
        if not table.row_count:
            self.notify("this run has no artifacts", timeout=3)
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        artifact = next((a for a in self.artifacts if a.id == row_key.value), None)
        if artifact is None:
            return

        def chosen(path: str | None) -> None:
            if path:
                self.download(artifact, path)

        suggestion = os.path.join(os.getcwd(), artifact.name)
        self.app.push_screen(PathScreen(f"Save {artifact.name} to", suggestion), chosen)

    @on(DataTable.RowSelected, "#artifact-table")
    def _artifact_selected(self) -> None:
        self.action_download()

    @work(group="run-actions")
    async def download(self, artifact: Artifact, path: str) -> None:
        try:
            target = await self.tui.client.download_artifact(artifact.id, os.path.expanduser(path))
        except (FlwdError, OSError) as exc:
            detail = exc.detail if isinstance(exc, FlwdError) else str(exc)
            self.notify(f"download failed: {detail}", severity="error")
            return
        self.notify(f"saved {target}", title="downloaded", timeout=5)
