"""The help screen: every key binding of every screen, read from the screens' own
`BINDINGS` so it cannot drift from them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def bindings_table(title: str, bindings: list[BindingType]) -> str:
    rows = [title]
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        key = binding.key_display or binding.key
        rows.append(f"  {key:<12} {binding.description}")
    return "\n".join(rows)


def help_text() -> str:
    from flwd_tui.app import FlwdTui
    from flwd_tui.screens.jobs import JobsScreen
    from flwd_tui.screens.run import RunScreen
    from flwd_tui.screens.run_form import RunFormScreen
    from flwd_tui.screens.runs import RunsScreen

    parts = [
        "flwd tui — keys (esc closes)\n\nctrl+p opens the command palette: every action"
        " below is there by name.",
        bindings_table("Everywhere", list(FlwdTui.BINDINGS)),
        bindings_table("Jobs", list(JobsScreen.BINDINGS)),
        bindings_table("Run form", list(RunFormScreen.BINDINGS)),
        bindings_table("Runs", list(RunsScreen.BINDINGS)),
        bindings_table("Run", list(RunScreen.BINDINGS)),
    ]
    return "\n\n".join(parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="help"):
            yield Static(help_text(), markup=False)

    def action_dismiss_help(self) -> None:
        self.dismiss()
