"""The `flwd` command group. Commands themselves come from plugins (`register_commands`)."""

from __future__ import annotations

import os
import sys

import click
import pluggy

from flwd import __version__
from flwd.errors import FlwdError
from flwd.plugins import DISABLE_ENV, process_plugin_manager, set_plugin_manager


class CliError(click.ClickException):
    """A user-facing error: printed to stderr as `error: ...`, exit status 2 or given."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


DISABLE_OPTION = "--disable-extension"


def disabled_in(argv: list[str]) -> list[str]:
    """The names given with `--disable-extension NAME` / `--disable-extension=NAME` before
    the command name: read ahead of click, since the plugin manager (whose extensions add
    commands) must exist before the command line is parsed."""
    names = []
    args = iter(argv)
    for arg in args:
        if arg == DISABLE_OPTION:
            names.append(next(args, ""))
        elif arg.startswith(DISABLE_OPTION + "="):
            names.append(arg.partition("=")[2])
        elif not arg.startswith("-"):
            break  # the command: its own options follow
    return [name for name in names if name]


def build_cli(pm: pluggy.PluginManager | None = None) -> click.Group:
    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="flwd")
    @click.option(
        DISABLE_OPTION,
        "disabled",
        multiple=True,
        metavar="NAME",
        help=f"Do not load this installed extension (repeatable; also {DISABLE_ENV}, "
        "comma-separated).",
    )
    def cli(disabled: tuple[str, ...]) -> None:
        """flwd turns a directory of scripts into typed, API-callable jobs."""

    if pm is None:
        pm = process_plugin_manager()
    pm.hook.register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `flwd` script: errors are one `error: ...` line, never a
    traceback (set FLWD_DEBUG=1 to see one)."""
    try:
        args = sys.argv[1:] if argv is None else argv
        # the one plugin manager of this process, for the CLI, the server and the engine
        pm = process_plugin_manager(disabled_in(args))
        set_plugin_manager(pm)
        cli = build_cli(pm)
        cli.main(args=args, prog_name="flwd", standalone_mode=False, obj=pm)
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
