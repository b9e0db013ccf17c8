"""The jobs screen: the catalogue grouped by namespace, with the folders that failed to
load and their diagnostics; it follows hot reload, `/` filters it, enter opens a job's run
form."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static, Tree

from flwd.errors import FlwdError
from flwd.jobs.views import InvalidJobInfo, JobList, JobSummary
from flwd_tui.messages import CatalogChanged
from flwd_tui.screens.base import TuiScreen
from flwd_tui.widgets.status_line import StatusLine

Entry = JobSummary | InvalidJobInfo


def matches(entry: Entry, needle: str) -> bool:
    """The `/` filter: a case-insensitive substring of the id, description or tags."""
    if not needle:
        return True
    needle = needle.lower()
    if isinstance(entry, JobSummary):
        hay = " ".join([entry.id, entry.description or "", *entry.tags])
    else:
        hay = " ".join([entry.id, entry.path, *(d.reason for d in entry.diagnostics)])
    return needle in hay.lower()


def job_label(job: JobSummary) -> Text:
    text = Text(f"{job.name:<20.40}", style="bold")
    text.append(f" {job.version or '-':<8}", style="cyan")
    text.append(f" {job.description or ''}", style="dim")
    return text


def describe_invalid(bad: InvalidJobInfo) -> str:
    lines = [f"{bad.id}: invalid ({bad.path})"]
    for diagnostic in bad.diagnostics:
        where = f"{diagnostic.file}:{diagnostic.line}" if diagnostic.line else diagnostic.file
        lines.append(f"  {where}: {diagnostic.reason}")
    return "\n".join(lines)


class JobsScreen(TuiScreen):
    BINDINGS = [
        Binding("enter", "open_job", "Run form", show=True, priority=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.catalog = JobList(jobs=[])
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static("Jobs", classes="screen-title")
        yield Input(placeholder="filter jobs (esc clears)", id="job-filter", classes="-hidden")
        tree: Tree[Entry | None] = Tree("jobs", id="job-tree")
        tree.show_root = False
        yield tree
        yield Static("", id="job-detail")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#job-tree", Tree).focus()
        if self.tui.live or not self.loaded:
            self.load()

    @work(exclusive=True, group="jobs")
    async def load(self) -> None:
        try:
            catalog = await self.tui.client.list_jobs()
        except FlwdError as exc:
            self.tui.report_failure(exc)
            return
        self.show(catalog)

    def show(self, catalog: JobList) -> None:
        """Rebuild the tree from `catalog` with the current filter, keeping the cursor on
        the same job where it still exists."""
        self.catalog = catalog
        self.loaded = True
        tree: Tree[Entry | None] = self.query_one("#job-tree", Tree)
        selected = tree.cursor_node.data if tree.cursor_node is not None else None
        selected_id = selected.id if selected is not None else None
        needle = self.query_one("#job-filter", Input).value.strip()
        tree.clear()
        groups: dict[str, list[JobSummary]] = {}
        for job in sorted(catalog.jobs, key=lambda j: (j.namespace, j.name)):
            if matches(job, needle):
                groups.setdefault(job.namespace or "(root)", []).append(job)
        for namespace, jobs in groups.items():
            node = tree.root.add(Text(f"{namespace}/", style="bold magenta"), expand=True)
            for job in jobs:
                node.add_leaf(job_label(job), data=job)
        invalid = [bad for bad in catalog.invalid if matches(bad, needle)]
        if invalid:
            node = tree.root.add(
                Text(f"invalid folders ({len(invalid)})", style="bold red"), expand=True
            )
            for bad in invalid:
                reason = bad.diagnostics[0].reason if bad.diagnostics else ""
                label = Text(f"✖ {bad.id:<20.40}", style="red")
                label.append(f" {reason}", style="dim")
                node.add_leaf(label, data=bad)
        if not groups and not invalid:
            empty = "no job matches the filter" if needle else "no jobs in the catalogue yet"
            tree.root.add_leaf(Text(empty, style="dim italic"))
        # Lines are known only once the tree has laid out its nodes.
        self.call_after_refresh(self._restore_cursor, selected_id)

    def _restore_cursor(self, selected_id: str | None) -> None:
        tree: Tree[Entry | None] = self.query_one("#job-tree", Tree)
        leaves = [leaf for node in tree.root.children for leaf in node.children if leaf.data]
        target = next((leaf for leaf in leaves if leaf.data.id == selected_id), None)  # type: ignore[union-attr]
        if target is None and leaves:
            target = leaves[0]
        if target is not None:
            tree.move_cursor(target)
        self._describe(tree.cursor_node.data if tree.cursor_node is not None else None)

    def _describe(self, entry: Entry | None) -> None:
        detail = self.query_one("#job-detail", Static)
        if isinstance(entry, JobSummary):
            tags = f"  tags: {', '.join(entry.tags)}" if entry.tags else ""
            detail.update(
                f"[b]{entry.id}[/b]  version {entry.version or '-'}  source {entry.source}"
                f"{tags}\n{entry.description or ''}"
            )
        elif isinstance(entry, InvalidJobInfo):
            detail.update(Text(describe_invalid(entry), style="red"))
        else:
            count = len(self.catalog.jobs)
            bad = len(self.catalog.invalid)
            detail.update(f"{count} job{'s' * (count != 1)}, {bad} invalid folder(s)")

    @on(Tree.NodeHighlighted, "#job-tree")
    def _highlighted(self, message: Tree.NodeHighlighted[Entry | None]) -> None:
        self._describe(message.node.data)

    @on(Tree.NodeSelected, "#job-tree")
    def _selected(self, message: Tree.NodeSelected[Entry | None]) -> None:
        if isinstance(message.node.data, JobSummary):
            self.open_form(message.node.data.id)

    def on_catalog_changed(self, message: CatalogChanged) -> None:
        change = message.change
        if change is not None:
            parts = [
                f"{label} {', '.join(ids)}"
                for label, ids in (
                    ("added", change.added),
                    ("changed", change.changed),
                    ("removed", change.removed),
                    ("invalid", change.invalid),
                )
                if ids
            ]
            if parts:
                self.notify("; ".join(parts), title="catalogue reloaded", timeout=4)
        self.load()

    # -- actions ---------------------------------------------------------------------

    def action_open_job(self) -> None:
        tree: Tree[Entry | None] = self.query_one("#job-tree", Tree)
        node = tree.cursor_node
        if node is not None and isinstance(node.data, JobSummary):
            self.open_form(node.data.id)
        elif node is not None:
            node.toggle()

    def open_form(self, job_id: str) -> None:
        from flwd_tui.screens.run_form import RunFormScreen

        self.app.push_screen(RunFormScreen(job_id))

    def action_filter(self) -> None:
        box = self.query_one("#job-filter", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#job-filter", Input)
        box.value = ""
        box.add_class("-hidden")
        self.query_one("#job-tree", Tree).focus()

    def action_reload(self) -> None:
        self.load()

    @on(Input.Changed, "#job-filter")
    def _filter_changed(self) -> None:
        self.show(self.catalog)

    @on(Input.Submitted, "#job-filter")
    def _filter_done(self) -> None:
        self.query_one("#job-tree", Tree).focus()
