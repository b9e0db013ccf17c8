"""The run form: a job's argument schema as fields (see `flwd_tui.schema_form`), checked
as the user types and, on submit, by the server, whose validation errors go beside the
fields their JSON Pointers name. A run that starts is opened at once."""

from __future__ import annotations

import contextlib
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Select, Static, Switch, TextArea

from flwd.errors import ArgumentsInvalid, FlwdError
from flwd.jobs.views import JobDetail
from flwd_tui.schema_form import (
    FieldError,
    FormField,
    assemble_args,
    form_fields,
    is_missing,
    parse_value,
)
from flwd_tui.screens.base import TuiScreen
from flwd_tui.widgets.form_fields import FieldBox, ObjectBox, build_fields, widget_id
from flwd_tui.widgets.status_line import StatusLine


def flatten(fields: list[FormField] | tuple[FormField, ...]) -> list[FormField]:
    out: list[FormField] = []
    for field in fields:
        out.append(field)
        out.extend(flatten(field.children))
    return out


class RunFormScreen(TuiScreen):
    BINDINGS = [
        Binding("ctrl+s", "submit", "Start run"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, job_id: str, job: JobDetail | None = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.job = job
        self.fields: list[FormField] = []

    def compose(self) -> ComposeResult:
        yield Static(f"Run {self.job_id}", classes="screen-title")
        yield VerticalScroll(id="form")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        if self.job is not None:
            self.call_later(self.build, self.job)
        else:
            self.load()

    @work(exclusive=True, group="form")
    async def load(self) -> None:
        try:
            job = await self.tui.client.get_job(self.job_id)
        except FlwdError as exc:
            self.tui.report_failure(exc)
            self.query_one("#form").mount(Static(exc.detail, classes="form-error"))
            return
        await self.build(job)

    async def build(self, job: JobDetail) -> None:
        self.job = job
        self.fields = form_fields(job.args, job.secret_args)
        form = self.query_one("#form", VerticalScroll)
        widgets: list[Widget] = []
        if job.description:
            widgets.append(Static(job.description, classes="form-description"))
        if not self.fields:
            widgets.append(Static("This job takes no arguments.", classes="form-note"))
        widgets.extend(build_fields(self.fields))
        widgets.append(Static("", id="form-error", classes="form-error -hidden"))
        widgets.append(Button("Start run (ctrl+s)", id="submit", variant="primary"))
        await form.mount_all(widgets)
        first = form.query(".field-input").first() if self.fields else self.query_one("#submit")
        first.focus()

    # -- checking --------------------------------------------------------------------

    def box(self, pointer: str) -> FieldBox | ObjectBox | None:
        found = self.query(f"#{widget_id(pointer)}")
        widget = found.first() if found else None
        return widget if isinstance(widget, (FieldBox, ObjectBox)) else None

    def check_field(self, box: FieldBox) -> Any:
        """The field's value (or the missing marker); shows its error and raises it."""
        try:
            value = parse_value(box.field, box.text(), self.job.args if self.job else None)
        except FieldError as exc:
            box.set_error(str(exc))
            raise
        if is_missing(value) and box.field.required:
            box.set_error("required")
            raise FieldError("required")
        box.set_error(None)
        return value

    @on(Input.Changed, ".field-input")
    @on(TextArea.Changed, ".field-input")
    @on(Select.Changed, ".field-input")
    @on(Switch.Changed, ".field-input")
    def _typed(
        self, message: Input.Changed | TextArea.Changed | Select.Changed | Switch.Changed
    ) -> None:
        box = message.control.parent if message.control is not None else None
        if isinstance(box, FieldBox):
            with contextlib.suppress(FieldError):
                self.check_field(box)

    def collect(self) -> dict[str, Any] | None:
        """The args, or None when a field is invalid (its error shown)."""
        values: dict[str, Any] = {}
        ok = True
        for box in self.query(FieldBox):
            try:
                values[box.field.pointer] = self.check_field(box)
            except FieldError:
                ok = False
        return assemble_args(values) if ok else None

    def show_server_errors(self, exc: ArgumentsInvalid) -> None:
        """Each error beside the field its pointer names (the deepest field that holds
        it); the rest above the submit button."""
        pointers = sorted((f.pointer for f in flatten(self.fields)), key=len, reverse=True)
        general: list[str] = []
        for field_box in self.query(FieldBox):
            field_box.set_error(None)
        for error in exc.errors:
            path = error.path or ""
            owner = next((p for p in pointers if path == p or path.startswith(p + "/")), None)
            box = self.box(owner) if owner else None
            if box is None:
                general.append(f"{path or '/'}: {error.message}")
            else:
                inner = path[len(owner or "") :]
                box.set_error(f"{inner + ': ' if inner else ''}{error.message}")
        self.form_error("\n".join(general) if general else exc.detail)

    def form_error(self, text: str | None) -> None:
        error = self.query_one("#form-error", Static)
        error.update(text or "")
        error.set_class(not text, "-hidden")

    # -- actions ---------------------------------------------------------------------

    @on(Button.Pressed, "#submit")
    def _pressed(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        if self.job is None:
            return
        args = self.collect()
        if args is None:
            self.form_error("fix the fields marked above")
            return
        self.form_error(None)
        self.start(args)

    @work(exclusive=True, group="form")
    async def start(self, args: dict[str, Any]) -> None:
        try:
            run = await self.tui.client.create_run(self.job_id, args)
        except ArgumentsInvalid as exc:
            self.show_server_errors(exc)
            return
        except FlwdError as exc:
            self.tui.report_failure(exc)
            self.form_error(exc.detail)
            return
        self.dismiss()
        self.tui.open_run(run.run_id)

    def action_back(self) -> None:
        self.dismiss()
