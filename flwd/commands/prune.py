"""`flwd prune`: apply the retention policy to a local data dir now.

A running server prunes by itself every `--prune-interval`; deleting needs the data dir's
engine lock, so `flwd prune` refuses while a server (or a local `flwd run`) holds it and
says so. `--dry-run` only reads, and works next to a running server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import click
import msgspec

from flwd.cli import CliError
from flwd.engine.retention import PruneReport
from flwd.hookspecs import hookimpl
from flwd.settings import Settings, SettingsError, load_settings, parse_duration


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "no age limit"
    days, rest = divmod(seconds, 86400)
    if not rest:
        return f"finished more than {days:.0f}d ago"
    return f"finished more than {seconds:.0f}s ago"


async def _prune(
    settings: Settings, *, dry_run: bool, max_age: float | None, max_runs: int | None
) -> PruneReport:
    # imported here: `flwd --help` should not load the engine
    from flwd.engine.datadir_lock import DataDirBusy, lock_data_dir
    from flwd.engine.retention import Pruner, job_retention
    from flwd.errors import StorageError
    from flwd.jobs.registry import JobRegistry
    from flwd.plugins import make_plugin_manager
    from flwd.storage.store import Store

    database = settings.data_path / "flwd.db"
    if not database.exists():
        raise CliError(f"nothing to prune: there is no flwd database in {settings.data_dir}")
    missing = [s for s in settings.sources if not os.path.isdir(s.path)]
    if missing:
        # without the job folders, every job's own retention: block would be ignored
        where = ", ".join(f"{s.name}={s.path}" for s in missing)
        message = (
            f"job source {where} is not a directory: name the server's job sources with "
            "--jobs (or FLWD_JOBS) so that each job's retention: block applies"
        )
        if not dry_run:
            raise CliError(message)
        click.echo(f"warning: {message}", err=True)
    lock: int | None = None
    if not dry_run:
        try:
            lock = lock_data_dir(settings)
        except DataDirBusy:
            interval = settings.prune_interval
            every = f"every {interval:g}s" if interval > 0 else "never (--prune-interval 0)"
            raise CliError(
                f"a flwd server (or another flwd command) is using the data dir "
                f"{settings.data_dir}; a server prunes by itself in the background (here "
                f"{every}); stop it to prune by hand, or see what would go with --dry-run",
                exit_code=1,
            ) from None
    try:
        catalog = JobRegistry(settings, make_plugin_manager()).catalog
        # without the lock nobody else writes: no run of ours is active
        async with Store(database, readonly=dry_run) as store:
            pruner = Pruner(
                store,
                settings,
                # the data dir's layout, as the engine writes it (flwd.engine.run_driver)
                blob_root=settings.data_path / "artifacts",
                work_root=settings.data_path / "work",
                job_retention=lambda job_id: job_retention(catalog, job_id),
                active=list,
            )
            return await pruner.prune(dry_run=dry_run, max_age=max_age, max_runs=max_runs)
    except StorageError as exc:
        raise CliError(str(exc.detail)) from exc
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                os.close(lock)


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Default max age for this pass, e.g. 7d (0: none) [--retention-max-age; 30d].",
)
@click.option(
    "--keep",
    type=click.IntRange(0),
    metavar="N",
    help="Default number of newest runs kept per job for this pass (0: no count limit) "
    "[--retention-max-runs; 1000].",
)
@click.option(
    "--jobs",
    "jobs",
    multiple=True,
    metavar="NAME=PATH",
    help="Job sources, to read each job's retention: block [./jobs; FLWD_JOBS].",
)
@click.option(
    "--data-dir", metavar="DIR", help="Local data dir [env FLWD_DATA_DIR; default .flwd]."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune_command(
    dry_run: bool,
    older_than: str | None,
    keep: int | None,
    jobs: tuple[str, ...],
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Delete finished runs the retention policy no longer keeps, with their events,
    artifacts and work dirs (a job's `retention:` block overrides the defaults)."""
    try:
        settings = load_settings(watch=False, data_dir=data_dir, jobs=jobs or None)
        max_age = None if older_than is None else parse_duration(older_than)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    report = asyncio.run(_prune(settings, dry_run=dry_run, max_age=max_age, max_runs=keep))
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report), indent=2).decode())
        return
    age = settings.retention_max_age if max_age is None else max_age
    runs = settings.retention_max_runs if keep is None else keep
    kept = f"the newest {runs} per job kept" if runs > 0 else "no count limit"
    click.echo(f"policy: {_age(age)}; {kept} (a job's retention: block overrides)")
    verb = "would prune" if report.dry_run else "pruned"
    click.echo(
        f"{verb} {report.runs} runs ({report.events} event rows, {report.artifacts} "
        f"artifacts; {report.blobs} blobs, {_size(report.blob_bytes)}; "
        f"{report.workdirs} work dirs)"
    )
    for job_id, count in sorted(report.jobs.items()):
        click.echo(f"  {job_id}: {count} runs")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(prune_command)
