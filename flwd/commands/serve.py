"""`flwd serve` (the HTTP API on uvicorn) and `flwd openapi` (print the API schema)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from typing import Any

import click
import msgspec
import uvicorn

from flwd import __version__
from flwd.cli import CliError
from flwd.hookspecs import hookimpl
from flwd.settings import CONTAINMENT_MODES, Settings, SettingsError, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Server(uvicorn.Server):
    """uvicorn's server, plus one line on stdout once the socket is listening."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Everything built so far (modules, the app, the catalog) lives as long as the
            # process: keep it out of the cyclic collector's full passes, which otherwise
            # walked it all and paused the event loop for ~50 ms under load.
            gc.collect()
            gc.freeze()
            base = f"http://{_url_host(self.settings.host)}:{self.settings.port}"
            click.echo(
                f"flwd {__version__} serving {base}/api/v1 (docs {base}/api/docs, "
                f"data {self.settings.data_path.resolve()})",
            )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _configure_logging(access_log: bool) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # uvicorn's own start-up chatter would repeat our one line; keep its warnings.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """The uvicorn configuration flwd runs with (see docs/operations.md for why)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # The standard asyncio loop: uvloop spawns processes 3.5-7x slower (DESIGN §12).
        loop="asyncio",
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        # SSE streams are closed by sse-starlette on shutdown; this bounds anything else.
        timeout_graceful_shutdown=10,
    )


def _settings(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command()
@click.option("--host", default=None, help="Interface to listen on [127.0.0.1; FLWD_HOST].")
@click.option("--port", type=int, default=None, help="TCP port [8080; FLWD_PORT].")
@click.option(
    "--jobs",
    "jobs",
    multiple=True,
    metavar="NAME=PATH",
    help="Job source (repeatable); a bare PATH names the 'local-fs' source [./jobs; FLWD_JOBS].",
)
@click.option("--data-dir", default=None, help="Database and artifacts [.flwd; FLWD_DATA_DIR].")
@click.option("--profile", default=None, help="Security profile [secure; FLWD_PROFILE].")
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="Log every request (costs ~38% of small-request throughput) [off; FLWD_ACCESS_LOG].",
)
@click.option(
    "--containment",
    type=click.Choice(CONTAINMENT_MODES),
    default=None,
    help="How a run's processes are kept together: a cgroup per run, or the subreaper "
    "[auto; FLWD_CONTAINMENT].",
)
def serve(
    host: str | None,
    port: int | None,
    jobs: tuple[str, ...],
    data_dir: str | None,
    profile: str | None,
    access_log: bool | None,
    containment: str | None,
) -> None:
    """Serve the REST API, SSE streams and the job runner until SIGINT or SIGTERM."""
    from flwd.app import create_app
    from flwd.plugins import make_plugin_manager

    settings = _settings(
        host=host,
        port=port,
        jobs=jobs or None,
        data_dir=data_dir,
        profile=profile,
        access_log=access_log,
        containment=containment,
    )
    _check_data_dir_free(settings)
    _check_containment(settings)
    _configure_logging(settings.access_log)
    app = create_app(settings, make_plugin_manager())
    server = _Server(uvicorn_config(settings, app), settings)
    # uvicorn installs SIGINT/SIGTERM handlers, stops accepting, lets streams drain and
    # then runs the lifespan exit, where the run service cancels or hands off active runs.
    # uvicorn re-raises the signal it caught once it has shut down; a SIGTERM that led to a
    # clean shutdown should end the process with status 0, not as if killed.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if not server.started:
        raise CliError(f"could not start on {settings.host}:{settings.port}", exit_code=1)


def _check_containment(settings: Settings) -> None:
    """Refuse `--containment cgroup` where no cgroup can be made, with one line."""
    from flwd.engine.containment import Containment

    if settings.containment == "cgroup":
        Containment.choose(settings.containment, settings.data_path)  # FlwdError: `error:`


def _check_data_dir_free(settings: Settings) -> None:
    """Refuse a busy data dir with one line before uvicorn starts: a failure inside the
    app's start-up would be reported by uvicorn as a traceback."""
    from flwd.engine.service import DataDirBusy, lock_data_dir

    try:
        os.close(lock_data_dir(settings))
    except DataDirBusy as exc:
        raise CliError(exc.detail, exit_code=1) from None


@click.command()
@click.option("--indent", type=int, default=2, show_default=True, help="JSON indentation.")
def openapi(indent: int) -> None:
    """Print the OpenAPI document of the HTTP API (no server needed)."""
    from flwd.app import create_app
    from flwd.plugins import make_plugin_manager

    app = create_app(_settings(), make_plugin_manager())
    schema = app.openapi_schema.to_schema()
    # msgspec, not json: the schema holds datetimes (examples) that json cannot encode.
    click.echo(msgspec.json.format(msgspec.json.encode(schema), indent=indent).decode())


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(openapi)
