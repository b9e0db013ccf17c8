"""The `flwd` command group. Commands themselves come from plugins (`register_commands`)."""

from __future__ import annotations

import sys

import click

from flwd import __version__
from flwd.plugins import make_plugin_manager


class CliError(click.ClickException):
    """A user-facing error: printed to stderr as `error: ...`, exit status 2 or given."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def build_cli() -> click.Group:
    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="flwd")
    def cli() -> None:
        """flwd turns a directory of scripts into typed, API-callable jobs."""

    pm = make_plugin_manager()
    pm.hook.register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    cli = build_cli()
    try:
        cli.main(args=argv, prog_name="flwd", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
