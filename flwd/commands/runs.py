"""`flwd run`, `restart`, `runs`, `logs`, `cancel` and `artifacts`: the local data dir,
the server running on it, or `--server URL` (see `flwd.commands.sources`).

Exit status of `flwd run`, `flwd restart` and `flwd logs -f`: 0 success, 1 failed,
3 cancelled (130 when interrupted by Ctrl-C), 2 for a usage or input error (unknown job,
invalid arguments, unreachable server).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from flwd.cli import CliError
from flwd.commands.sources import RunSource, ServerTarget, open_source, server_url
from flwd.errors import ArgumentsInvalid, FlwdError
from flwd.hookspecs import hookimpl
from flwd.models import ArtifactList, Event, LogLine, Run, RunDetail, RunList
from flwd.settings import Settings, SettingsError, load_settings
from flwd.states import RunStatus

T = TypeVar("T")
EXIT_BY_STATUS = {RunStatus.SUCCESS: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 3}

server_option = click.option(
    "--server",
    metavar="URL",
    help="Talk to this flwd server [env FLWD_SERVER; default: the server running on the "
    "data dir, else the data dir itself].",
)
data_dir_option = click.option(
    "--data-dir", metavar="DIR", help="Local data dir [env FLWD_DATA_DIR; default .flwd]."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(watch=False, **overrides)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def _execute(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; domain errors become `error: ...` lines, exit 2."""
    try:
        return asyncio.run(coro)
    except ArgumentsInvalid as exc:
        lines = [exc.detail] + [f"  {e.path or '/'}: {e.message}" for e in exc.errors]
        raise CliError("\n".join(lines)) from exc
    except FlwdError as exc:
        raise CliError(exc.detail) from exc


def _dump(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _when(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _duration(run: Run) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at or datetime.now(run.started_at.tzinfo)
    return f"{(end - run.started_at).total_seconds():.1f}s"


# -- argument parsing ---------------------------------------------------------------------


def parse_args(
    pairs: tuple[str, ...], args_file: str | None, schema: dict[str, Any]
) -> dict[str, Any]:
    """`key=value` (a string, or converted to the type the job's schema declares) and
    `key:=json` (always JSON), over the object in `--args-file`."""
    args: dict[str, Any] = {}
    if args_file:
        try:
            loaded = msgspec.json.decode(Path(args_file).read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise CliError(f"--args-file {args_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise CliError(f"--args-file {args_file}: must hold a JSON object")
        args.update(loaded)
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"-a {pair!r}: use key=value, or key:=JSON for a typed value")
        if key.endswith(":"):
            key = key[:-1]
            try:
                args[key] = msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                raise CliError(f"-a {key}:= {value!r} is not JSON: {exc}") from exc
            continue
        declared = properties.get(key, {}).get("type") if isinstance(properties, dict) else None
        args[key] = _coerce(value, declared)
    return args


def _coerce(value: str, declared: Any) -> Any:
    types = declared if isinstance(declared, list) else [declared]
    if "string" in types or declared is None:
        return value
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value  # let the job's schema report it, with its path


# -- printing -----------------------------------------------------------------------------


def _print_line(line: LogLine | Event, prefix: bool) -> None:
    data = (
        line.data
        if isinstance(line, Event)
        else {
            "level": line.level,
            "message": line.message,
            "step_id": line.step_id,
        }
    )
    message = str(data.get("message", ""))
    if prefix and data.get("step_id"):
        message = f"[{data['step_id']}] {message}"
    click.echo(message, err=data.get("level") == "error")


async def _follow(source: RunSource, run_id: str, quiet: bool, as_json: bool = False) -> Run:
    """Print the run's output lines as they come (`[step] ` first when it has several
    steps, as `flwd logs` does); return the run once it has ended."""
    prefix = len(await source.steps(run_id)) > 1
    async for event in source.events(run_id):
        if event.type == "run.output" and not quiet:
            if as_json:
                click.echo(msgspec.json.encode(event).decode())
            else:
                _print_line(event, prefix)
    return await source.get_run(run_id)


def _summary(run: Run) -> str:
    """`RUN_ID STATUS (reason): error`: the last line `run`, `restart` and `logs -f` print."""
    summary = f"{run.run_id} {run.status.value}"
    if run.reason:
        summary += f" ({run.reason.value})"
    if run.error:
        summary += f": {run.error}"
    return summary


def _print_result(run: Run, as_json: bool) -> None:
    if as_json:
        _dump(run)
        return
    if run.result is not None and run.result.value is not None:
        click.echo(msgspec.json.encode(run.result.value).decode())
    click.echo(_summary(run), err=True)


def _exit_code(run: Run, interrupted: bool) -> int:
    if interrupted and run.status is RunStatus.CANCELLED:
        return 130
    return EXIT_BY_STATUS.get(run.status, 1)


# -- commands -----------------------------------------------------------------------------


@click.command("run")
@click.argument("job_id")
@click.option(
    "-a",
    "--arg",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An argument (repeatable); KEY:=JSON for a typed value.",
)
@click.option("--args-file", metavar="FILE", help="A JSON object of arguments.")
@click.option("--detach", is_flag=True, help="With --server: print the run id and return at once.")
@click.option(
    "--jobs",
    "jobs",
    multiple=True,
    metavar="NAME=PATH",
    help="Job source for local mode (repeatable) [env FLWD_JOBS].",
)
@json_option
@server_option
@data_dir_option
def run_command(
    job_id: str,
    pairs: tuple[str, ...],
    args_file: str | None,
    detach: bool,
    jobs: tuple[str, ...],
    as_json: bool,
    server: str | None,
    data_dir: str | None,
) -> None:
    """Run JOB_ID, stream its output live and exit with its status.

    Output lines go to stdout (stderr lines of the job to stderr); the result and a
    summary line follow. Ctrl-C cancels the run and every process it started.
    """
    settings = _settings(server=server, data_dir=data_dir, jobs=jobs or None)
    remote = server_url(settings, own_jobs=bool(jobs))

    async def start(source: RunSource) -> Run:
        schema = (await source.get_job(job_id)).args
        return await source.create_run(job_id, parse_args(pairs, args_file, schema))

    _start_and_follow(settings, remote, start, detach=detach, as_json=as_json)


def _start_and_follow(
    settings: Settings,
    remote: ServerTarget | None,
    start: Callable[[RunSource], Awaitable[Run]],
    *,
    detach: bool,
    as_json: bool,
) -> None:
    """Start a run with `start`, then (unless `detach`) stream its output, print its result
    and summary, and exit with its status; Ctrl-C cancels it."""
    if detach and remote is None:
        # A local run lives in this process: returning at once would cancel it.
        raise click.UsageError(
            "--detach needs a server (--server URL, FLWD_SERVER, or flwd serve on the data dir)"
        )

    async def main() -> tuple[Run, bool]:
        async with open_source(settings, execute=True, server=remote) as source:
            run = await start(source)
            if detach:
                return run, False
            interrupted = False
            cancelling: list[asyncio.Task[None]] = []

            def interrupt() -> None:
                nonlocal interrupted
                if not interrupted:
                    interrupted = True
                    click.echo(f"cancelling {run.run_id} ...", err=True)
                    cancelling.append(
                        asyncio.create_task(_cancel_quietly(source.cancel_run, run.run_id))
                    )

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, interrupt)
            try:
                final = await _follow(source, run.run_id, as_json)
            finally:
                loop.remove_signal_handler(signal.SIGINT)
            return final, interrupted

    run, interrupted = _execute(main())
    if detach:
        _dump(run) if as_json else click.echo(run.run_id)
        return
    _print_result(run, as_json)
    sys.exit(_exit_code(run, interrupted))


@click.command("restart")
@click.argument("run_id")
@click.option(
    "-a",
    "--arg",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An argument overriding the run's (repeatable); KEY:=JSON for a typed value.",
)
@click.option("--args-file", metavar="FILE", help="A JSON object of overriding arguments.")
@click.option("--detach", is_flag=True, help="With a server: print the run id and return.")
@json_option
@server_option
@data_dir_option
def restart_command(
    run_id: str,
    pairs: tuple[str, ...],
    args_file: str | None,
    detach: bool,
    as_json: bool,
    server: str | None,
    data_dir: str | None,
) -> None:
    """Run RUN_ID's job again with its arguments (-a overrides some), like `flwd run`.

    Secret arguments are never stored readable: give them again with -a.
    """
    settings = _settings(server=server, data_dir=data_dir)

    async def start(source: RunSource) -> Run:
        args = None
        if pairs or args_file:
            old = await source.get_run(run_id)
            schema = (await source.get_job(old.job_id)).args
            args = parse_args(pairs, args_file, schema)
        return await source.restart_run(run_id, args)

    _start_and_follow(settings, server_url(settings), start, detach=detach, as_json=as_json)


async def _cancel_quietly(cancel: Callable[[str], Awaitable[Run]], run_id: str) -> None:
    with contextlib.suppress(FlwdError):
        await cancel(run_id)


@click.group("runs", invoke_without_command=True)
@click.option("--job", "job_id", metavar="JOB_ID", help="Only runs of this job.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only this status.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, type=click.IntRange(0))
@json_option
@server_option
@data_dir_option
@click.pass_context
def runs_group(
    ctx: click.Context,
    job_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    server: str | None,
    data_dir: str | None,
) -> None:
    """List runs, newest first (`--json` prints the API's `{"runs": [...], "total": N}`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> RunList:
        async with open_source(settings, server=server_url(settings)) as source:
            return await source.list_runs(
                job_id=job_id,
                status=RunStatus(status) if status else None,
                limit=limit,
                offset=offset,
            )

    page = _execute(main())
    if as_json:
        _dump(page)
        return
    rows = [
        (r.run_id, r.job_id, r.status.value, _when(r.created_at), _duration(r)) for r in page.runs
    ]
    _table(("RUN", "JOB", "STATUS", "CREATED", "DURATION"), rows)
    click.echo(f"{len(page.runs)} of {page.total} runs", err=True)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


@runs_group.command("show")
@click.argument("run_id")
@json_option
@server_option
@data_dir_option
def runs_show(run_id: str, as_json: bool, server: str | None, data_dir: str | None) -> None:
    """Show one run: status, arguments (secrets masked), steps and result (`--json`
    prints the API's `GET /runs/{run_id}` body)."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> RunDetail:
        async with open_source(settings, server=server_url(settings)) as source:
            return await source.get_run(run_id)

    run = _execute(main())
    steps = run.steps
    if as_json:
        _dump(run)
        return
    click.echo(
        f"run      {run.run_id}\njob      {run.job_id}\nstatus   {run.status.value}"
        + (f" ({run.reason.value})" if run.reason else "")
    )
    click.echo(f"created  {_when(run.created_at)}\nduration {_duration(run)}")
    if run.error:
        click.echo(f"error    {run.error}")
    click.echo(f"args     {msgspec.json.encode(run.args).decode()}")
    for step in steps:
        detail = f" ({step.reason.value})" if step.reason else ""
        code = f" exit {step.exit_code}" if step.exit_code is not None else ""
        click.echo(f"  step {step.step_id}: {step.status.value}{detail}{code}")
    if run.result is not None:
        click.echo(f"result   {msgspec.json.encode(run.result.value).decode()}")


@click.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the run ends.")
@json_option
@server_option
@data_dir_option
def logs_command(
    run_id: str, follow: bool, as_json: bool, server: str | None, data_dir: str | None
) -> None:
    """Print a run's output (stderr lines of the job to stderr).

    With -f, stream it until the run ends, then print its summary line and exit with its
    status, as `flwd run` does.
    """
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> Run | None:
        async with open_source(settings, server=server_url(settings)) as source:
            if follow:
                return await _follow(source, run_id, quiet=False, as_json=as_json)
            prefix = len(await source.steps(run_id)) > 1
            for line in await source.logs(run_id):
                if as_json:
                    click.echo(msgspec.json.encode(line).decode())
                else:
                    _print_line(line, prefix)
            return None

    run = _execute(main())
    if run is not None:
        click.echo(_summary(run), err=True)
        sys.exit(_exit_code(run, interrupted=False))


@click.command("cancel")
@click.argument("run_id")
@json_option
@server_option
@data_dir_option
def cancel_command(run_id: str, as_json: bool, server: str | None, data_dir: str | None) -> None:
    """Cancel a run: TERM to all its processes, KILL after the grace period."""
    settings = _settings(server=server, data_dir=data_dir)

    remote = server_url(settings)

    async def main() -> Run:
        async with open_source(settings, execute=remote is None, server=remote) as source:
            return await source.cancel_run(run_id)

    run = _execute(main())
    _dump(run) if as_json else click.echo(f"{run.run_id} {run.status.value}")


@click.group("artifacts", invoke_without_command=True)
@click.option("--run", "run_id", metavar="RUN_ID", help="Only artifacts of this run.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@json_option
@server_option
@data_dir_option
@click.pass_context
def artifacts_group(
    ctx: click.Context,
    run_id: str | None,
    limit: int,
    as_json: bool,
    server: str | None,
    data_dir: str | None,
) -> None:
    """List artifacts (`--json` prints the API's `{"artifacts": [...], "total": N}`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> ArtifactList:
        async with open_source(settings, server=server_url(settings)) as source:
            return await source.list_artifacts(run_id=run_id, limit=limit)

    page = _execute(main())
    if as_json:
        _dump(page)
        return
    _table(
        ("ARTIFACT", "RUN", "PATH", "TYPE", "BYTES"),
        [(a.id, a.run_id, a.path, a.media_type, str(a.size_bytes)) for a in page.artifacts],
    )


@artifacts_group.command("get")
@click.argument("artifact_id")
@click.option(
    "-o",
    "--output",
    "dest",
    default=".",
    show_default=True,
    metavar="PATH",
    help="File to write, or a directory (existing, or ending in /) to put it in under its name.",
)
@server_option
@data_dir_option
def artifacts_get(artifact_id: str, dest: str, server: str | None, data_dir: str | None) -> None:
    """Download an artifact."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> Path:
        async with open_source(settings, server=server_url(settings)) as source:
            return await source.download(artifact_id, dest)

    click.echo(str(_execute(main())))


@hookimpl
def register_commands(cli: click.Group) -> None:
    commands = (
        run_command,
        restart_command,
        runs_group,
        logs_command,
        cancel_command,
        artifacts_group,
    )
    for command in commands:
        cli.add_command(command)
