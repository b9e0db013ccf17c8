"""The `flwd` command group. Commands themselves come from plugins (`register_commands`)."""

from __future__ import annotations

import os
import sys

import click

from flwd import __version__
from flwd.errors import FlwdError
from flwd.plugins import make_plugin_manager


class CliError(click.ClickException):
    """A user-facing error: printed to stderr as `error: ...`, exit status 2 or given."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

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
    """Entry point of the `flwd` script: errors are one `error: ...` line, never a
    traceback (set FLWD_DEBUG=1 to see one)."""
    try:
        cli = build_cli()
        cli.main(args=argv, prog_name="flwd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except FlwdError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("FLWD_DEBUG"):
            raise
        click.echo(f"error: internal error ({type(exc).__name__}): {exc}", err=True)
        sys.exit(1)
