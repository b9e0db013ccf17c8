"""The extension's hook implementations (the `tui` entry point of the `flwd` group)."""

from __future__ import annotations

import click

from flwd.hookspecs import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    from flwd_tui.command import tui_command

    cli.add_command(tui_command)
