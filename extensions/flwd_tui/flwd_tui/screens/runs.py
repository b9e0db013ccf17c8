"""The runs screen: a live table of runs, newest first, loaded a page at a time as the
cursor nears the end (so 10,000 stored runs cost one page to open), kept current from the
run events; `s` cycles the status filter, `f` filters by job, `/` searches (`q`)."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static

from flwd.errors import FlwdError
from flwd.models import Run
from flwd_tui.messages import ConnectionChanged, RunEventReceived
from flwd_tui.screens.base import TuiScreen
from flwd_tui.widgets.dag import duration
from flwd_tui.widgets.status_line import StatusLine

PAGE = 100
#: Load the next page when the cursor is this close to the last loaded row.
PREFETCH = 20
STATUSES = ("", "pending", "running", "success", "failed", "cancelled")
STATUS_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "success": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}
COLUMNS = ("status", "job", "tenant", "started", "duration", "exit", "run")
#: Run events after which a row is read again.
LIFECYCLE = {"run.created", "run.started", "run.cancelled", "run.finished", "step.finished"}


def when(ts: datetime | None) -> str:
    return ts.strftime("%m-%d %H:%M:%S") if ts else "-"


def row_cells(run: Run, now: datetime) -> tuple[Text | str, ...]:
    exit_text = "-" if run.exit_code is None else str(run.exit_code)
    if run.signal:
        exit_text = f"sig {run.signal}"
    return (
        Text(str(run.status), style=STATUS_STYLE.get(str(run.status), "")),
        run.job_id,
        run.tenant,
        when(run.started_at or run.created_at),
        duration(run.started_at, run.finished_at, now) or "-",
        exit_text,
        run.run_id,
    )


class RunsScreen(TuiScreen):
    BINDINGS = [
        Binding("enter", "open_run", "Open", show=False),
        Binding("s", "cycle_status", "Status filter"),
        Binding("f", "job_filter", "Job filter"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("escape", "clear_filters", "Clear filters"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.status_filter = ""
        self.total = 0
        self.runs: dict[str, Run] = {}
        self.dirty: set[str] = set()
        self.loading = False

    def compose(self) -> ComposeResult:
        yield Static("Runs", id="runs-title", classes="screen-title")
        yield Input(
            placeholder="job id (enter applies, esc clears)", id="job-box", classes="-hidden"
        )
        yield Input(placeholder="search job, error, arguments", id="search-box", classes="-hidden")
        table: DataTable[Text | str] = DataTable(
            id="runs-table", cursor_type="row", zebra_stripes=True
        )
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        table.focus()
        self.watch(table, "scroll_y", self._scrolled, init=False)
        self.reload()
        if self.tui.live:
            self.set_interval(0.5, self.flush)
            self.set_interval(1.0, self.tick)

    # -- loading ---------------------------------------------------------------------

    def filters(self) -> dict[str, str | None]:
        job = self.query_one("#job-box", Input).value.strip()
        q = self.query_one("#search-box", Input).value.strip()
        return {"status": self.status_filter or None, "job_id": job or None, "q": q or None}

    def reload(self) -> None:
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        table.clear()
        self.runs.clear()
        self.total = 0
        self.load_page(0)

    @work(exclusive=True, group="runs-page")
    async def load_page(self, offset: int) -> None:
        self.loading = True
        try:
            page = await self.tui.client.list_runs(limit=PAGE, offset=offset, **self.filters())
        except FlwdError as exc:
            self.tui.report_failure(exc)
            return
        finally:
            self.loading = False
        self.total = page.total
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        now = self.tui.clock()
        for run in page.runs:
            if run.run_id in self.runs:
                continue
            self.runs[run.run_id] = run
            table.add_row(*row_cells(run, now), key=run.run_id)
        self.retitle()

    def retitle(self) -> None:
        parts = [f"Runs  {len(self.runs)} of {self.total}"]
        filters = self.filters()
        for name, value in filters.items():
            if value:
                parts.append(f"{name}={value}")
        self.query_one("#runs-title", Static).update("  ".join(parts))

    def more(self) -> None:
        """The next page, unless one is on its way or every run is here."""
        loaded = len(self.runs)
        if not self.loading and loaded < self.total:
            self.loading = True
            self.load_page(loaded)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _near_end(self, message: DataTable.RowHighlighted) -> None:
        if message.cursor_row >= len(self.runs) - PREFETCH:
            self.more()

    def _scrolled(self, y: float) -> None:
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        if table.max_scroll_y and y >= table.max_scroll_y - PREFETCH:
            self.more()

    # -- live ------------------------------------------------------------------------

    def on_run_event_received(self, message: RunEventReceived) -> None:
        if message.event.type in LIFECYCLE:
            self.dirty.add(message.event.run_id)

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        if message.ok:
            self.reload()  # what changed while the server was away

    def flush(self) -> None:
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            self.refresh_runs(sorted(dirty))

    @work(group="runs-live")
    async def refresh_runs(self, run_ids: list[str]) -> None:
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        filters = self.filters()
        added = False
        for run_id in run_ids[-PAGE:]:
            try:
                run = await self.tui.client.get_run(run_id)
            except FlwdError:
                continue
            fits = (filters["status"] in (None, str(run.status))) and (
                filters["job_id"] in (None, run.job_id)
            )
            if run_id in self.runs:
                self.runs[run_id] = run
                for column, cell in zip(COLUMNS, row_cells(run, self.tui.clock()), strict=True):
                    table.update_cell(run_id, column, cell)
            elif fits and not filters["q"]:
                self.runs[run_id] = run
                table.add_row(*row_cells(run, self.tui.clock()), key=run_id)
                self.total += 1
                added = True
        if added:
            row = table.cursor_row
            table.sort("run", reverse=True)  # run ids are ULIDs: newest first
            table.move_cursor(row=row)
        self.retitle()

    def tick(self) -> None:
        """Durations of what still runs grow every second."""
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        now = self.tui.clock()
        for run_id, run in self.runs.items():
            if run.started_at is not None and run.finished_at is None:
                table.update_cell(run_id, "duration", duration(run.started_at, None, now))

    # -- actions ---------------------------------------------------------------------

    def action_open_run(self) -> None:
        table: DataTable[Text | str] = self.query_one("#runs-table", DataTable)
        if table.row_count:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            if row_key.value:
                self.tui.open_run(row_key.value)

    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, message: DataTable.RowSelected) -> None:
        if message.row_key.value:
            self.tui.open_run(message.row_key.value)

    def action_cycle_status(self) -> None:
        index = STATUSES.index(self.status_filter)
        self.status_filter = STATUSES[(index + 1) % len(STATUSES)]
        self.reload()

    def action_job_filter(self) -> None:
        box = self.query_one("#job-box", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_search(self) -> None:
        box = self.query_one("#search-box", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_clear_filters(self) -> None:
        self.status_filter = ""
        for box in self.query(Input):
            box.value = ""
            box.add_class("-hidden")
        self.query_one("#runs-table", DataTable).focus()
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    @on(Input.Submitted)
    def _filter_applied(self) -> None:
        self.query_one("#runs-table", DataTable).focus()
        self.reload()
