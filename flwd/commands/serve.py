"""`flwd serve` (the HTTP API on uvicorn) and `flwd openapi` (print the API schema)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec
import uvicorn

from flwd import API_PREFIX, __version__, logthrottle
from flwd.cli import CliError
from flwd.hookspecs import hookimpl
from flwd.local_server import (
    ServerInfo,
    process_start_ticks,
    remove_server_file,
    write_server_file,
)
from flwd.settings import (
    CONTAINMENT_MODES,
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    parse_id_range,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Server(uvicorn.Server):
    """uvicorn's server, plus one line on stdout once the socket is listening."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for server in self.servers:
                for listener in server.sockets:
                    bound_sends(listener, self.settings)
            # Everything built so far (modules, the app, the catalog) lives as long as the
            # process: keep it out of the cyclic collector's full passes, which otherwise
            # walked it all and paused the event loop for ~50 ms under load.
            gc.collect()
            gc.freeze()
            base = (
                f"{_scheme(self.settings)}://{_url_host(self.settings.host)}:{self.settings.port}"
            )
            self.announce()
            click.echo(
                f"flwd {__version__} serving {base}{API_PREFIX} (docs {base}/api/docs, "
                f"data {self.settings.data_path.resolve()})",
            )

    def announce(self) -> None:
        """Write `server.json` into the data dir, so local commands find this server."""
        port = self.settings.port
        for server in self.servers:  # the bound port (the setting may be 0)
            for sock in server.sockets:
                port = sock.getsockname()[1]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.settings.host, self.settings.host
        )
        pid = os.getpid()
        cert = self.settings.tls_cert
        info = ServerInfo(
            url=f"{_scheme(self.settings)}://{_url_host(host)}:{port}",
            tls_cert=str(Path(cert).absolute()) if cert else None,
            pid=pid,
            started_at=datetime.now(UTC),
            version=__version__,
            process_start=process_start_ticks(pid),
        )
        write_server_file(self.settings.data_path, info)


def bound_sends(listener: Any, settings: Settings) -> None:
    """Options on a listening socket that its accepted connections inherit (Linux):
    `SO_SNDBUF` caps the kernel memory a client that stops reading can pin (autotuning
    lets it grow to 4 MiB each), and `TCP_USER_TIMEOUT` makes the kernel reset a
    connection whose client has taken nothing for `send_timeout` seconds, which frees
    its buffers even while the server still holds unsent data for it (asyncio's `close`
    would wait for that data to be taken, that is, for ever)."""
    if settings.send_buffer:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None and listener.family in (socket.AF_INET, socket.AF_INET6):
        listener.setsockopt(socket.IPPROTO_TCP, user_timeout, int(settings.send_timeout * 1000))


def _scheme(settings: Settings) -> str:
    return "https" if settings.tls_cert else "http"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _configure_logging(access_log: bool) -> None:
    # Each kind of line at most once per 10 s, the rest counted (flwd.logthrottle).
    logthrottle.install(logging.INFO, LOG_FORMAT)
    # uvicorn's own start-up chatter would repeat our one line; keep its warnings.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """The uvicorn configuration flwd runs with (see docs/operations.md for why)."""
    from flwd.api.connections import ConnectionBook, guarded_protocol

    book = ConnectionBook(
        max_connections=settings.max_connections,
        max_streams=settings.max_streams,
        header_timeout=settings.header_timeout,
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvicorn's HTTP protocol inside flwd's connection cap and request-head timeout.
        http=guarded_protocol(book),
        # The standard asyncio loop: uvloop spawns processes 3.5-7x slower (DESIGN §12).
        loop="asyncio",
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        # SSE streams are closed by sse-starlette on shutdown; this bounds anything else.
        timeout_graceful_shutdown=10,
        # Forwarded headers only from the peers named with --forwarded-allow-ips, none by
        # default. Passed explicitly: uvicorn's own default trusts 127.0.0.1 and ::1 (or
        # its FORWARDED_ALLOW_IPS variable), which would let any local caller choose the
        # client address the server sees.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


def check_tls(settings: Settings) -> None:
    """Refuse a TLS certificate or key that cannot be used, with one `error:` line, before
    uvicorn starts (which would report it as a traceback)."""
    if not settings.tls_cert and not settings.tls_key:
        return
    if not settings.tls_cert or not settings.tls_key:
        raise CliError(
            "--tls-cert and --tls-key go together (FLWD_TLS_CERT, FLWD_TLS_KEY): give both",
            exit_code=1,
        )
    for flag, path in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"{flag} {path}: {exc.strerror or exc}", exit_code=1) from None
    try:
        # An empty password, so that an encrypted key fails here instead of prompting.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key, password=lambda: b""
        )
    except (ssl.SSLError, ValueError) as exc:
        raise CliError(
            f"--tls-cert {settings.tls_cert} / --tls-key {settings.tls_key}: not a usable PEM "
            f"certificate and matching private key ({getattr(exc, 'reason', None) or exc})",
            exit_code=1,
        ) from None


def _duration(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except SettingsError as exc:
        raise click.UsageError(f"{flag}: {exc}") from exc


def _id_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_id_range(value)
    except SettingsError as exc:
        raise click.UsageError(f"--run-user-ids: {exc}") from exc


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
    "--send-timeout",
    default=None,
    help="Cut a client that takes no data for this long, e.g. 5s [5s; FLWD_SEND_TIMEOUT].",
)
@click.option(
    "--send-buffer",
    type=int,
    default=None,
    help="Kernel send buffer per connection in bytes, 0 = autotuning [131072; FLWD_SEND_BUFFER].",
)
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="Log every request (costs ~38% of small-request throughput) [off; FLWD_ACCESS_LOG].",
)
@click.option(
    "--retention-max-age",
    metavar="DURATION",
    default=None,
    help="Prune finished runs older than this, unless their job says otherwise (0: never) "
    "[30d; FLWD_RETENTION_MAX_AGE].",
)
@click.option(
    "--retention-max-runs",
    type=click.IntRange(0),
    default=None,
    metavar="N",
    help="Keep at most the newest N runs per job, unless the job says otherwise (0: no "
    "limit) [1000; FLWD_RETENTION_MAX_RUNS].",
)
@click.option(
    "--prune-interval",
    metavar="DURATION",
    default=None,
    help="How often the background pruning pass runs (0: never) [10m; FLWD_PRUNE_INTERVAL].",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Open connections besides event streams; more are 503 [256; FLWD_MAX_CONNECTIONS].",
)
@click.option(
    "--max-streams",
    type=int,
    default=None,
    help="Open event streams; more are 503 [512; FLWD_MAX_STREAMS].",
)
@click.option(
    "--header-timeout",
    default=None,
    metavar="DURATION",
    help="Time a client has to send a request's head [10s; FLWD_HEADER_TIMEOUT].",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="HOST",
    help="Also answer requests for this Host (repeatable) [FLWD_ALLOWED_HOSTS].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Grant CORS to this origin, e.g. https://ui.example (repeatable) [FLWD_CORS_ORIGINS].",
)
@click.option(
    "--tls-cert",
    metavar="FILE",
    default=None,
    help="Serve HTTPS with this PEM certificate (chain); needs --tls-key [FLWD_TLS_CERT].",
)
@click.option(
    "--tls-key",
    metavar="FILE",
    default=None,
    help="The PEM private key of --tls-cert [FLWD_TLS_KEY].",
)
@click.option(
    "--forwarded-allow-ips",
    "forwarded_allow_ips",
    multiple=True,
    metavar="IP",
    help="Believe X-Forwarded-For/-Proto only from this proxy address or network "
    "(repeatable; comma-separated works too; none by default) [FLWD_FORWARDED_ALLOW_IPS].",
)
@click.option(
    "--containment",
    type=click.Choice(CONTAINMENT_MODES),
    default=None,
    help="How a run's processes are kept together: a cgroup per run, or the subreaper "
    "[auto; FLWD_CONTAINMENT].",
)
@click.option(
    "--run-user-ids",
    default=None,
    metavar="FIRST-LAST",
    help="User ids given to runs whose profile says run_as: run-user, one per active run, "
    "when the server runs as root [200000-265535; FLWD_RUN_USER_IDS].",
)
def serve(
    host: str | None,
    port: int | None,
    jobs: tuple[str, ...],
    data_dir: str | None,
    profile: str | None,
    send_timeout: str | None,
    send_buffer: int | None,
    access_log: bool | None,
    retention_max_age: str | None,
    retention_max_runs: int | None,
    prune_interval: str | None,
    max_connections: int | None,
    max_streams: int | None,
    header_timeout: str | None,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
    forwarded_allow_ips: tuple[str, ...],
    containment: str | None,
    run_user_ids: str | None,
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
        send_timeout=_duration("--send-timeout", send_timeout),
        send_buffer=send_buffer,
        access_log=access_log,
        retention_max_age=_duration("--retention-max-age", retention_max_age),
        retention_max_runs=retention_max_runs,
        prune_interval=_duration("--prune-interval", prune_interval),
        max_connections=max_connections,
        max_streams=max_streams,
        header_timeout=_duration("--header-timeout", header_timeout),
        allowed_hosts=allowed_hosts,
        cors_origins=cors_origins,
        tls_cert=tls_cert,
        tls_key=tls_key,
        forwarded_allow_ips=tuple(
            word for value in forwarded_allow_ips for word in value.replace(",", " ").split()
        ),
        containment=containment,
        run_user_ids=_id_range(run_user_ids),
    )
    check_tls(settings)
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
    try:
        server.run()
    finally:
        remove_server_file(settings.data_path, os.getpid())
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
    from flwd.engine.datadir_lock import DataDirBusy, lock_data_dir

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
