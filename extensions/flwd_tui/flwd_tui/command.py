"""`flwd tui [--server URL] [--token T]`: open the terminal UI on a flwd server."""

from __future__ import annotations

import asyncio

import click

from flwd.cli import CliError
from flwd.settings import SettingsError, load_settings


def pick_server(
    server: str | None, token: str | None, data_dir: str | None
) -> tuple[str, str | None]:
    """The URL and token to use: `--server` (else FLWD_SERVER), else the server running on
    the data dir (its `server.json`, with the token its `token_file` names); `--token`
    (FLWD_TOKEN) wins over the file's token."""
    from flwd.client import find_local_server

    try:
        settings = load_settings(watch=False, server=server, data_dir=data_dir)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    if settings.server:
        return settings.server, token
    info = find_local_server(settings.data_path)
    if info is None:
        raise CliError(
            f"no flwd server runs on the data dir {settings.data_dir}: start one with "
            "`flwd serve`, or give --server URL"
        )
    return info.url, token or info.read_token()


@click.command("tui")
@click.option(
    "--server",
    metavar="URL",
    help="The flwd server [env FLWD_SERVER; default: the server running on the data dir].",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar="FLWD_TOKEN",
    help="Bearer token [env FLWD_TOKEN; default: the local server's token file].",
)
@click.option(
    "--data-dir", metavar="DIR", help="Local data dir [env FLWD_DATA_DIR; default .flwd]."
)
def tui_command(server: str | None, token: str | None, data_dir: str | None) -> None:
    """Open the terminal UI: jobs, run forms, live runs and logs (needs a server)."""
    url, bearer = pick_server(server, token, data_dir)
    asyncio.run(_run(url, bearer))


async def _run(url: str, token: str | None) -> None:
    from flwd.client import FlwdClient
    from flwd_tui.app import FlwdTui

    async with FlwdClient(url, token=token) as client:
        await FlwdTui(client, server_label=url).run_async()
