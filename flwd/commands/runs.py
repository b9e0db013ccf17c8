"""`flwd run`, `runs`, `logs`, `cancel` and `artifacts`: local data dir or `--server URL`.

Exit status of `flwd run`: 0 success, 1 failed, 3 cancelled (130 when cancelled by Ctrl-C),
2 for a usage or input error (unknown job, invalid arguments, unreachable server).
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
from flwd.commands.backends import Backend, open_backend
from flwd.errors import ArgumentsInvalid, FlwdError
from flwd.hookspecs import hookimpl
from flwd.models import Event, LogLine, Run
from flwd.settings import Settings, SettingsError, load_settings
from flwd.states import RunStatus

T = TypeVar("T")
EXIT_BY_STATUS = {RunStatus.SUCCESS: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 3}

server_option = click.option(
    "--server",
    metavar="URL",
    help="Talk to a flwd server instead of the local data dir [env FLWD_SERVER].",
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


async def _follow(backend: Backend, run_id: str, prefix: bool, quiet: bool) -> Run:
    async for event in backend.events(run_id):
        if event.type == "run.output" and not quiet:
            _print_line(event, prefix)
    return await backend.get_run(run_id)


def _print_result(run: Run, as_json: bool) -> None:
    if as_json:
        _dump(run)
        return
    if run.result is not None and run.result.value is not None:
        click.echo(msgspec.json.encode(run.result.value).decode())
    summary = f"{run.run_id} {run.status.value}"
    if run.reason:
        summary += f" ({run.reason.value})"
    if run.error:
        summary += f": {run.error}"
    click.echo(summary, err=True)


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
    if detach and not settings.server:
        # A local run lives in this process: returning at once would cancel it.
        raise click.UsageError("--detach needs a server (--server URL or FLWD_SERVER)")

    async def main() -> tuple[Run, bool]:
        async with open_backend(settings, execute=True) as backend:
            schema = await backend.job_schema(job_id)
            run = await backend.create_run(job_id, parse_args(pairs, args_file, schema))
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
                        asyncio.create_task(_cancel_quietly(backend.cancel_run, run.run_id))
                    )

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, interrupt)
            try:
                steps = await backend.steps(run.run_id)
                final = await _follow(backend, run.run_id, len(steps) > 1, as_json)
            finally:
                loop.remove_signal_handler(signal.SIGINT)
            return final, interrupted

    run, interrupted = _execute(main())
    if detach:
        _dump(run) if as_json else click.echo(run.run_id)
        return
    _print_result(run, as_json)
    code = (
        130
        if interrupted and run.status is RunStatus.CANCELLED
        else EXIT_BY_STATUS.get(run.status, 1)
    )
    sys.exit(code)


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

    async def main() -> tuple[list[Run], int]:
        async with open_backend(settings) as backend:
            return await backend.list_runs(
                job_id=job_id,
                status=RunStatus(status) if status else None,
                limit=limit,
                offset=offset,
            )

    runs, total = _execute(main())
    if as_json:
        _dump({"runs": runs, "total": total})
        return
    rows = [(r.run_id, r.job_id, r.status.value, _when(r.created_at), _duration(r)) for r in runs]
    _table(("RUN", "JOB", "STATUS", "CREATED", "DURATION"), rows)
    click.echo(f"{len(runs)} of {total} runs", err=True)


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
    """Show one run: status, arguments (secrets masked), steps and result."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> tuple[Run, list[Any]]:
        async with open_backend(settings) as backend:
            return await backend.get_run(run_id), await backend.steps(run_id)

    run, steps = _execute(main())
    if as_json:
        _dump({**msgspec.to_builtins(run), "steps": msgspec.to_builtins(steps)})
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
    """Print a run's output (stderr lines of the job to stderr)."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> None:
        async with open_backend(settings) as backend:
            steps = await backend.steps(run_id)
            prefix = len(steps) > 1
            if follow:
                async for event in backend.events(run_id):
                    if event.type == "run.output":
                        if as_json:
                            click.echo(msgspec.json.encode(event).decode())
                        else:
                            _print_line(event, prefix)
                return
            for line in await backend.logs(run_id):
                if as_json:
                    click.echo(msgspec.json.encode(line).decode())
                else:
                    _print_line(line, prefix)

    _execute(main())


@click.command("cancel")
@click.argument("run_id")
@json_option
@server_option
@data_dir_option
def cancel_command(run_id: str, as_json: bool, server: str | None, data_dir: str | None) -> None:
    """Cancel a run: TERM to all its processes, KILL after the grace period."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> Run:
        async with open_backend(settings, execute=settings.server is None) as backend:
            return await backend.cancel_run(run_id)

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
    """List artifacts (`--json` prints the API's `{"artifacts": [...]}`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> list[Any]:
        async with open_backend(settings) as backend:
            return await backend.list_artifacts(run_id=run_id, limit=limit)

    items = _execute(main())
    if as_json:
        _dump({"artifacts": items})
        return
    _table(
        ("ARTIFACT", "RUN", "PATH", "TYPE", "BYTES"),
        [(a.id, a.run_id, a.path, a.media_type, str(a.size_bytes)) for a in items],
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
    help="File to write, or a directory to put it in under its name.",
)
@server_option
@data_dir_option
def artifacts_get(artifact_id: str, dest: str, server: str | None, data_dir: str | None) -> None:
    """Download an artifact."""
    settings = _settings(server=server, data_dir=data_dir)

    async def main() -> Path:
        async with open_backend(settings) as backend:
            return await backend.download(artifact_id, Path(dest))

    click.echo(str(_execute(main())))


@hookimpl
def register_commands(cli: click.Group) -> None:
    for command in (run_command, runs_group, logs_command, cancel_command, artifacts_group):
        cli.add_command(command)
