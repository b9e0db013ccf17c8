"""The extension's hook implementations (the `mcp` entry point of the `flwd` group):
`flwd mcp` (stdio) and `/mcp` (streamable HTTP) in `flwd serve`."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import click

from flwd.cli import CliError
from flwd.hookspecs import hookimpl
from flwd.local_server import find_local_server
from flwd.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # the server side is imported only by `flwd serve`
    from litestar.config.app import AppConfig


@hookimpl
def configure_app(config: AppConfig, settings: Settings) -> None:
    from flwd_mcp.mount import mount

    mount(config, settings)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(mcp_command)


@click.command("mcp")
@click.option(
    "--server",
    metavar="URL",
    envvar="FLWD_SERVER",
    help="The flwd server to serve [env FLWD_SERVER; default: the server running on the data dir].",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar="FLWD_TOKEN",
    help="Bearer token for --server [env FLWD_TOKEN; default: the local server's token file].",
)
@click.option(
    "--data-dir",
    metavar="DIR",
    envvar="FLWD_DATA_DIR",
    help="Data dir of the local server [env FLWD_DATA_DIR; default .flwd].",
)
def mcp_command(server: str | None, token: str | None, data_dir: str | None) -> None:
    """Serve MCP over stdio (for desktop agents) in front of a flwd server.

    Every valid job is a tool; see docs/mcp.md for a client configuration."""
    from flwd_mcp.stdio import serve_stdio

    url = server
    if url is None:
        try:
            settings = load_settings(os.environ, **({"data_dir": data_dir} if data_dir else {}))
        except SettingsError as exc:
            raise CliError(str(exc)) from None
        info = find_local_server(settings.data_path)
        if info is None:
            raise CliError(
                f"no flwd server runs on the data dir {settings.data_dir}: start `flwd serve`, "
                "or give --server URL (and --token)"
            )
        url = info.url
        token = token or info.read_token()
    asyncio.run(serve_stdio(url, token))
