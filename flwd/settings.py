"""One frozen settings object, built from command-line flags over `FLWD_*` environment
variables over defaults. Nothing else in flwd reads the environment for configuration."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import durationpy
import msgspec

DEFAULT_SOURCE = "local-fs"
CONTAINMENT_MODES = ("auto", "cgroup", "subreaper")


class SettingsError(ValueError):
    """A flag or environment variable has a value flwd cannot use."""


class JobSource(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    type: str = "fs"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    sources: tuple[JobSource, ...] = (JobSource(name=DEFAULT_SOURCE, path="jobs"),)
    data_dir: str = ".flwd"
    host: str = "127.0.0.1"
    port: int = 8080
    profile: str = "secure"
    server: str | None = None
    # Scheduler
    max_concurrency: int = 16
    max_queue: int = 1000
    # Executor
    kill_grace: float = 5.0
    #: how a run's processes are kept together: `auto` (a cgroup v2 per run where the
    #: server can make one, else the subreaper), `cgroup` (or fail to start), `subreaper`
    containment: str = "auto"
    #: user (and group) ids from which each run gets one of its own when a profile says
    #: `run_as: run-user` and the server runs as root (docs/sandbox.md)
    run_user_ids: tuple[int, int] = (200000, 265535)
    line_limit: int = 16 * 1024
    output_head_bytes: int = 8 * 1024 * 1024
    output_tail_bytes: int = 2 * 1024 * 1024
    # HTTP
    max_body_bytes: int = 1024 * 1024
    heartbeat: float = 15.0
    #: Seconds a write to a client may take before the connection is cut (SSE streams
    #: end at once; the kernel resets any connection whose client took nothing that long).
    send_timeout: float = 5.0
    #: Kernel send buffer of each connection, in bytes (0: the kernel's autotuning, up to
    #: several MiB per connection that stops reading).
    send_buffer: int = 128 * 1024
    access_log: bool = False
    watch: bool = True
    # Retention (docs/operations.md): 0 turns a limit, or background pruning, off
    retention_max_age: float = 30 * 24 * 3600.0
    retention_max_runs: int = 1000
    prune_interval: float = 600.0
    # Connection guards (docs/operations.md#connection-limits)
    max_connections: int = 256
    max_streams: int = 512
    header_timeout: float = 10.0
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # TLS and proxies (docs/operations.md#tls-and-reverse-proxies)
    #: PEM certificate (chain) and private key: with both, `flwd serve` speaks HTTPS.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Peers whose `X-Forwarded-For`/`-Proto` headers are believed (IPs or networks);
    #: none by default, so no caller can choose the client address the server sees.
    forwarded_allow_ips: tuple[str, ...] = ()
    #: CA certificate (PEM) a command trusts for an HTTPS `--server`.
    ca_cert: str | None = None

    @property
    def data_path(self) -> Path:
        """The data dir as an absolute path: paths under it reach jobs (`FLWD_RUN_DIR`,
        `FLWD_RESULT_FILE`, ...), whose working directory is their run's, not ours."""
        return Path(self.data_dir).absolute()


def parse_duration(text: str | float | int) -> float:
    """Seconds from `"90s"`, `"15m"`, `"1h30m"` (Go duration syntax) or a plain number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise SettingsError(f"duration {text!r} must not be negative")
        return float(text)
    if not isinstance(text, str):
        raise SettingsError(f"duration {text!r} must be a string like '90s' or a number")
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        try:
            seconds = durationpy.from_str(stripped).total_seconds()
        except Exception as exc:  # durationpy raises bare Exception subclasses
            raise SettingsError(
                f"'{text}' is not a duration; use forms like '90s', '15m', '1h30m'"
            ) from exc
    if seconds < 0:
        raise SettingsError(f"duration '{text}' must not be negative")
    return seconds


def parse_sources(specs: list[str] | tuple[str, ...]) -> tuple[JobSource, ...]:
    """`NAME=PATH` items (a bare `PATH` is the default source) into job sources."""
    sources: dict[str, JobSource] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = DEFAULT_SOURCE, spec
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise SettingsError(f"job source '{spec}' must look like NAME=PATH")
        if name in sources:
            raise SettingsError(f"job source '{name}' is named twice")
        sources[name] = JobSource(name=name, path=path)
    return tuple(sources.values())


_ENV_FIELDS: dict[str, tuple[str, Any]] = {
    "FLWD_DATA_DIR": ("data_dir", str),
    "FLWD_HOST": ("host", str),
    "FLWD_PORT": ("port", int),
    "FLWD_PROFILE": ("profile", str),
    "FLWD_SERVER": ("server", str),
    "FLWD_MAX_CONCURRENCY": ("max_concurrency", int),
    "FLWD_MAX_QUEUE": ("max_queue", int),
    "FLWD_KILL_GRACE": ("kill_grace", parse_duration),
    "FLWD_CONTAINMENT": ("containment", lambda v: v.strip().lower()),
    "FLWD_RUN_USER_IDS": ("run_user_ids", lambda v: parse_id_range(v)),
    "FLWD_LINE_LIMIT": ("line_limit", int),
    "FLWD_OUTPUT_HEAD_BYTES": ("output_head_bytes", int),
    "FLWD_OUTPUT_TAIL_BYTES": ("output_tail_bytes", int),
    "FLWD_MAX_BODY_BYTES": ("max_body_bytes", int),
    "FLWD_HEARTBEAT": ("heartbeat", parse_duration),
    "FLWD_SEND_TIMEOUT": ("send_timeout", parse_duration),
    "FLWD_SEND_BUFFER": ("send_buffer", int),
    "FLWD_ACCESS_LOG": ("access_log", lambda v: v.lower() in {"1", "true", "yes", "on"}),
    "FLWD_RETENTION_MAX_AGE": ("retention_max_age", parse_duration),
    "FLWD_RETENTION_MAX_RUNS": ("retention_max_runs", int),
    "FLWD_PRUNE_INTERVAL": ("prune_interval", parse_duration),
    "FLWD_MAX_CONNECTIONS": ("max_connections", int),
    "FLWD_MAX_STREAMS": ("max_streams", int),
    "FLWD_HEADER_TIMEOUT": ("header_timeout", parse_duration),
    "FLWD_ALLOWED_HOSTS": ("allowed_hosts", lambda v: _word_list(v)),
    "FLWD_CORS_ORIGINS": ("cors_origins", lambda v: _word_list(v)),
    "FLWD_TLS_CERT": ("tls_cert", str),
    "FLWD_TLS_KEY": ("tls_key", str),
    "FLWD_FORWARDED_ALLOW_IPS": ("forwarded_allow_ips", lambda v: _word_list(v)),
    "FLWD_CA_CERT": ("ca_cert", str),
}


def parse_id_range(text: str) -> tuple[int, int]:
    """`200000-265535` as (200000, 265535): ids above 0, the first not above the last."""
    first, dash, last = text.strip().partition("-")
    try:
        ids = (int(first), int(last))
    except ValueError:
        raise SettingsError(f"{text!r} is not a range of ids such as 200000-265535") from None
    if not dash or not 0 < ids[0] <= ids[1] < 2**32 - 1:
        raise SettingsError(f"{text!r} must be FIRST-LAST with 0 < FIRST <= LAST < 4294967295")
    return ids


def _word_list(text: str) -> tuple[str, ...]:
    """`a.example, b.example` or `a.example b.example` as a tuple of words."""
    return tuple(word for word in text.replace(",", " ").split() if word)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then `FLWD_*` variables, then non-None `overrides` (command-line flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if env.get("FLWD_JOBS"):
        values["sources"] = parse_sources(
            [part for part in env["FLWD_JOBS"].split(os.pathsep) if part.strip()]
        )
    for var, (field, convert) in _ENV_FIELDS.items():
        if var in env and env[var] != "":
            try:
                values[field] = convert(env[var])
            except (ValueError, SettingsError) as exc:
                raise SettingsError(f"{var}={env[var]!r}: {exc}") from exc
    for field, value in overrides.items():
        if value is None:
            continue
        if field == "jobs":
            if value:
                values["sources"] = parse_sources(list(value))
            continue
        if field in ("allowed_hosts", "cors_origins", "forwarded_allow_ips"):
            if value:
                values[field] = tuple(value)
            continue
        values[field] = value
    settings = Settings(**values)
    if settings.max_concurrency < 1:
        raise SettingsError("max_concurrency must be at least 1")
    if settings.max_queue < 0:
        raise SettingsError("max_queue must not be negative")
    if settings.retention_max_runs < 0:
        raise SettingsError("retention_max_runs must not be negative (0: no count limit)")
    if settings.send_timeout <= 0:
        raise SettingsError("send_timeout must be more than 0 seconds")
    if settings.send_buffer < 0:
        raise SettingsError("send_buffer must not be negative")
    if settings.max_connections < 1 or settings.max_streams < 0:
        raise SettingsError("max_connections must be at least 1, max_streams at least 0")
    if settings.header_timeout <= 0:
        raise SettingsError("header_timeout must be positive")
    for origin in settings.cors_origins:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise SettingsError(f"CORS origin '{origin}' must look like https://host[:port]")
    for peer in settings.forwarded_allow_ips:
        if peer == "*":  # every peer: only where the proxy alone can reach the port
            continue
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise SettingsError(
                f"--forwarded-allow-ips: '{peer}' is not an IP address or network"
            ) from None
    if settings.containment not in CONTAINMENT_MODES:
        raise SettingsError(
            f"containment {settings.containment!r} must be one of {', '.join(CONTAINMENT_MODES)}"
        )
    return settings
