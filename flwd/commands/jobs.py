"""`flwd jobs`, `flwd jobs show ID` and `flwd validate [PATH ...]`.

They read job folders directly (no server needed): the same scanner and loader the server
uses, so what `flwd validate` accepts is exactly what the server will run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from flwd.cli import CliError
from flwd.commands.sources import ServerTarget, open_client, server_url
from flwd.errors import FlwdError, InvalidInput, JobNotFound, JobNotRunnable, NotFound
from flwd.hookspecs import hookimpl
from flwd.jobs.registry import JobRegistry
from flwd.jobs.scanner import FolderScanner
from flwd.jobs.views import (
    InvalidJobInfo,
    JobDetail,
    JobList,
    JobSummary,
    format_diagnostic,
    invalid_job_dict,
)
from flwd.models import InvalidJob, JobSpec, SourceInfo
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from flwd.client import FlwdClient

T = TypeVar("T")

JOBS_OPTION = click.option(
    "--jobs",
    "sources",
    multiple=True,
    metavar="NAME=PATH",
    help="A job source (repeatable); default: FLWD_JOBS or local-fs=./jobs. Reads the "
    "folders directly, even when a server runs.",
)
SERVER_OPTION = click.option(
    "--server",
    metavar="URL",
    help="Ask this flwd server [env FLWD_SERVER; default: the server running on the data "
    "dir, else the job folders themselves].",
)
DATA_DIR_OPTION = click.option(
    "--data-dir", metavar="DIR", help="Where to look for a running server [env FLWD_DATA_DIR]."
)


def _settings(sources: Sequence[str], server: str | None, data_dir: str | None) -> Settings:
    try:
        return load_settings(
            jobs=list(sources) or None, watch=False, server=server, data_dir=data_dir
        )
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def _remote(settings: Settings, sources: Sequence[str]) -> ServerTarget | None:
    return server_url(settings, own_jobs=bool(sources))


def _ask(remote: ServerTarget, call: Callable[[FlwdClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_client(remote) as client:
            return await call(client)

    try:
        return asyncio.run(main())
    except FlwdError as exc:
        raise CliError(
            exc.detail, exit_code=1 if isinstance(exc, NotFound | InvalidInput) else 2
        ) from exc


def _echo_json(data: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())


def _warn_invalid(listing: JobList) -> None:
    if listing.invalid:
        count = len(listing.invalid)
        click.echo(
            f"{count} invalid job folder{'s' if count != 1 else ''}; "
            "run `flwd validate` to see why",
            err=True,
        )


@click.group("jobs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's GET /api/v1/jobs body.")
@click.option("--namespace", help="Only jobs in this namespace (exact match).")
@click.option("--source", help="Only jobs from this source.")
@JOBS_OPTION
@SERVER_OPTION
@DATA_DIR_OPTION
@click.pass_context
def jobs(
    ctx: click.Context,
    as_json: bool,
    namespace: str | None,
    source: str | None,
    sources: tuple[str, ...],
    server: str | None,
    data_dir: str | None,
) -> None:
    """List the jobs found in the job sources."""
    ctx.obj = {"sources": sources, "server": server, "data_dir": data_dir}
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(sources, server, data_dir)
    remote = _remote(settings, sources)
    if remote is not None:

        async def ask(client: FlwdClient) -> tuple[list[SourceInfo], JobList]:
            info = await client.system_info()
            return info.sources, await client.list_jobs(namespace=namespace, source=source)

        known_sources, listing = _ask(remote, ask)
    else:
        registry = JobRegistry(settings, make_plugin_manager())
        catalog = registry.catalog
        known_sources = [
            SourceInfo(name=str(i["name"]), type=str(i["type"]), path=str(i["path"]))
            for i in registry.source_info()
        ]
        listing = JobList(
            jobs=[JobSummary.of(job) for job in catalog.list(namespace=namespace, source=source)],
            invalid=[
                InvalidJobInfo.of(bad)
                for bad in catalog.invalid
                if (source is None or bad.source == source)
                and (namespace is None or bad.id.rpartition("/")[0] == namespace)
            ],
        )
    known = [info.name for info in known_sources]
    if source is not None and source not in known:
        raise CliError(f"there is no job source named '{source}' (sources: {', '.join(known)})")
    if as_json:
        _echo_json(listing)
    elif listing.jobs:
        _print_table(listing.jobs)
    else:
        where = ", ".join(f"{i.name} ({i.path})" for i in known_sources)
        click.echo(f"no jobs found in {where}", err=True)
    _warn_invalid(listing)


def _print_table(found: list[JobSummary]) -> None:
    rows = [("ID", "VERSION", "SOURCE", "DESCRIPTION")] + [
        (job.id, job.version or "-", job.source, (job.description or "").strip().split("\n")[0])
        for job in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo(("  ".join(cells) + "  " + row[3]).rstrip())


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's job detail body.")
@JOBS_OPTION
@SERVER_OPTION
@DATA_DIR_OPTION
@click.pass_context
def show(
    ctx: click.Context,
    job_id: str,
    as_json: bool,
    sources: tuple[str, ...],
    server: str | None,
    data_dir: str | None,
) -> None:
    """Show one job: description, arguments and steps."""
    parent = ctx.obj or {}
    sources = sources or parent.get("sources", ())
    settings = _settings(
        sources, server or parent.get("server"), data_dir or parent.get("data_dir")
    )
    remote = _remote(settings, sources)
    if remote is not None:
        job = _ask(remote, lambda client: client.get_job(job_id))
    else:
        registry = JobRegistry(settings, make_plugin_manager())
        try:
            job = JobDetail.of(registry.catalog.get(job_id))
        except (JobNotRunnable, JobNotFound) as exc:
            raise CliError(exc.detail, exit_code=1) from exc
    if as_json:
        _echo_json(job)
    else:
        _print_job(job)


def _print_job(job: JobDetail) -> None:
    header = job.id + (f"  {job.title}" if job.title else "")
    click.echo(click.style(header, bold=True))
    if job.description:
        click.echo(job.description.rstrip())
    facts = [
        ("version", job.version),
        ("source", job.source),
        ("path", job.path),
        ("tags", ", ".join(job.tags) or None),
        ("timeout", f"{job.timeout:g}s" if job.timeout else None),
        ("retries", str(job.retries) if job.retries else None),
        ("concurrency", None if job.concurrency is None else str(job.concurrency.limit)),
        ("security profile", job.security_profile),
    ]
    for label, value in facts:
        if value:
            click.echo(f"  {label + ':':<18}{value}")
    click.echo("arguments:")
    properties: dict[str, Any] = job.args.get("properties", {})
    required = set(job.args.get("required", []))
    if not properties:
        click.echo("  (none)")
    for name, schema in properties.items():
        schema = schema if isinstance(schema, dict) else {}
        notes = [str(schema.get("type", "any"))]
        if name in required:
            notes.append("required")
        if "default" in schema:
            notes.append(f"default {json.dumps(schema['default'])}")
        pointer = "/" + name.replace("~", "~0").replace("/", "~1")
        if pointer in job.secret_args:
            notes.append("secret")
        elif any(p.startswith(pointer + "/") for p in job.secret_args):
            notes.append(
                "secrets inside: "
                + ", ".join(p for p in job.secret_args if p.startswith(pointer + "/"))
            )
        description = f"  {schema['description']}" if schema.get("description") else ""
        click.echo(f"  {name}  ({', '.join(notes)}){description}")
    click.echo("steps:")
    for step in job.steps:
        needs = f"  (after {', '.join(step.needs)})" if step.needs else ""
        click.echo(f"  {step.id}: {step.script or '(command)'}{needs}")


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Check job folders; print every problem as `file:line: reason`.

    PATH is a source root (a directory of job folders) or one job folder; the default is
    ./jobs. Warnings (`file:line: warning: reason`) are printed too but do not make a
    job invalid. Exits 1 when any job folder is invalid, 0 otherwise.
    """
    valid: list[JobSpec] = []
    invalid: list[InvalidJob] = []
    for path in paths or ("jobs",):
        if not os.path.isdir(path):
            raise CliError(f"{path}: no such directory")
        single = os.path.isfile(os.path.join(path, "config.yaml"))
        result = FolderScanner("validate", path, single_job=single).scan()
        valid.extend(result.jobs)
        invalid.extend(result.invalid)
    warned = [job for job in valid if job.warnings]
    if as_json:
        _echo_json(
            {
                "valid": [job.id for job in valid],
                "invalid": [invalid_job_dict(b) for b in invalid],
                "warnings": [
                    {"id": job.id, "diagnostics": msgspec.to_builtins(job.warnings)}
                    for job in warned
                ],
            }
        )
    else:
        cwd = os.getcwd()
        for bad in invalid:
            for diagnostic in bad.diagnostics:
                click.echo(format_diagnostic(diagnostic, relative_to=cwd))
        for job in warned:
            for diagnostic in job.warnings:
                click.echo(format_diagnostic(diagnostic, relative_to=cwd, warning=True))
        total = len(valid) + len(invalid)
        count = sum(len(job.warnings) for job in warned)
        click.echo(
            f"{total} job folder{'s' if total != 1 else ''} checked: "
            f"{len(valid)} valid, {len(invalid)} invalid"
            + (f"; {count} warning{'s' if count != 1 else ''}" if count else ""),
            err=True,
        )
    sys.exit(1 if invalid else 0)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """The built-in job commands."""
    cli.add_command(jobs)
    cli.add_command(validate)
