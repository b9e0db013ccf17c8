"""One widget per field of a run form (`flwd_tui.schema_form.FormField`): its label (the
name, `*` when required, the type and bounds), the input that suits its kind, its
description as help, and a line for its error."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch, TextArea

from flwd_tui.schema_form import FieldKind, FormField


def widget_id(pointer: str) -> str:
    """A widget id for a JSON Pointer (ids allow letters, digits, `-` and `_`)."""
    return "f" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f"-{ord(m.group()):x}-", pointer)


def field_title(field: FormField) -> Text:
    text = Text(field.name, style="bold")
    if field.required:
        text.append(" *", style="bold red")
    kind = {FieldKind.ARRAY: f"list of {field.item_kind}", FieldKind.JSON: "JSON"}.get(
        field.kind, str(field.kind)
    )
    text.append(f"  {kind}", style="cyan")
    if field.secret:
        text.append("  secret", style="yellow")
    if field.bounds:
        text.append(f"  {field.bounds}", style="dim")
    if field.kind is FieldKind.ARRAY and not field.secret:
        text.append("  (one per line)", style="dim")
    return text


class FieldBox(Vertical):
    """The widgets of one scalar, list or JSON field."""

    DEFAULT_CLASSES = "field"

    def __init__(self, field: FormField) -> None:
        super().__init__(id=widget_id(field.pointer))
        self.field = field

    def compose(self) -> ComposeResult:
        field = self.field
        yield Label(field_title(field), classes="field-title")
        initial = field.initial_text()
        if field.secret:
            hint = "JSON list" if field.kind in (FieldKind.ARRAY, FieldKind.JSON) else ""
            yield Input(value="", password=True, placeholder=hint, classes="field-input")
        elif field.kind is FieldKind.BOOLEAN:
            yield Switch(value=bool(field.default), classes="field-input")
        elif field.kind is FieldKind.ENUM:
            options = [
                (json.dumps(o) if not isinstance(o, str) else o, json.dumps(o))
                for o in field.options
            ]
            value: Any = json.dumps(field.default) if field.has_default else Select.NULL
            yield Select(
                options,
                value=value,
                allow_blank=not (field.required and field.has_default),
                classes="field-input",
            )
        elif field.kind in (FieldKind.ARRAY, FieldKind.JSON):
            yield TextArea(initial, classes="field-input field-multiline", soft_wrap=True)
        else:
            kind = {FieldKind.INTEGER: "integer", FieldKind.NUMBER: "number"}.get(
                field.kind, "text"
            )
            yield Input(value=initial, type=kind, classes="field-input")  # type: ignore[arg-type]
        if field.description:
            yield Static(field.description, classes="field-help")
        yield Static("", classes="field-error -hidden")

    def text(self) -> str:
        """What the field holds, as the text `schema_form.parse_value` reads."""
        widget = self.query_one(".field-input", Widget)
        if isinstance(widget, Switch):
            return "true" if widget.value else "false"
        if isinstance(widget, Select):
            return "" if widget.value is Select.NULL else str(widget.value)
        if isinstance(widget, TextArea):
            return widget.text
        if isinstance(widget, Input):
            if self.field.secret and self.field.kind is FieldKind.ARRAY and widget.value.strip():
                try:  # a secret list is typed as JSON in its one masked line
                    items = json.loads(widget.value)
                except json.JSONDecodeError:
                    return widget.value
                if isinstance(items, list):
                    return "\n".join(str(item) for item in items)
            return widget.value
        return ""

    def set_error(self, message: str | None) -> None:
        error = self.query_one(".field-error", Static)
        error.update(message or "")
        error.set_class(not message, "-hidden")
        self.set_class(bool(message), "-invalid")


class ObjectBox(Vertical):
    """A nested object: a bordered group holding its properties' fields."""

    DEFAULT_CLASSES = "field-group"

    def __init__(self, field: FormField) -> None:
        super().__init__(id=widget_id(field.pointer))
        self.field = field
        title = field.name + (" *" if field.required else "")
        self.border_title = title
        if field.description:
            self.border_subtitle = field.description

    def compose(self) -> ComposeResult:
        yield from build_fields(self.field.children)
        yield Static("", classes="field-error -hidden")

    def set_error(self, message: str | None) -> None:
        error = self.query_children(".field-error").only_one(Static)
        error.update(message or "")
        error.set_class(not message, "-hidden")


def build_fields(fields: tuple[FormField, ...] | list[FormField]) -> ComposeResult:
    for field in fields:
        if field.kind is FieldKind.OBJECT:
            yield ObjectBox(field)
        else:
            yield FieldBox(field)
