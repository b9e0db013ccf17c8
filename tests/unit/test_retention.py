"""Retention: which finished runs a pass deletes (by count, by age, per job), what goes with
them (events, steps, artifact rows, blobs no other run shares, work dirs), what never goes
(runs that are not terminal), dry runs, and the pruned-events watermark streams check.

Everything is real: job folders, a `RunService` over a SQLite data dir, real processes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from datetime import timedelta

import pytest

from flwd.engine.retention import effective_policy
from flwd.engine.service import RunService
from flwd.errors import EventsPruned, RunNotFound
from flwd.models import RetentionSpec, utcnow
from flwd.settings import SettingsError, load_settings
from flwd.states import RunStatus
from flwd.storage import retention as sql
from flwd.storage.retention import Candidate, Policy
from tests.unit.conftest import JobsTree
from tests.unit.engine_support import EngineWorld, events_of, finish, run_job, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]

DAY = 24 * 3600.0
#: a pass only by the policy under test: no background pass, no other limit
QUIET = {"prune_interval": 0, "retention_max_age": 0, "retention_max_runs": 0}


def _rows(world: EngineWorld, table: str, run_id: str) -> int:
    with sqlite3.connect(world.data_dir / "flwd.db") as db:
        return int(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0]
        )


def _blobs(world: EngineWorld) -> list[str]:
    root = world.data_dir / "artifacts"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _age_blobs(world: EngineWorld) -> None:
    """Blobs written an hour ago (no run is writing them any more)."""
    old = time.time() - 3600
    for path in (world.data_dir / "artifacts").rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


async def _runs(service: RunService, job_id: str, count: int) -> list[str]:
    return [(await run_job(service, job_id)).run_id for _ in range(count)]


async def test_max_runs_keeps_the_newest_runs_of_each_job(engine_world: EngineWorld) -> None:
    engine_world.job("noop", {"command": "echo hi"})
    engine_world.job("other", {"command": "true"})
    async with engine_world.open(**{**QUIET, "retention_max_runs": 2}) as service:
        old, *kept = await _runs(service, "noop", 3)
        others = await _runs(service, "other", 2)
        assert _rows(engine_world, "events", old) > 0

        report = await service.prune()

        assert (report.runs, report.jobs) == (1, {"noop": 1})
        assert report.events >= 4  # created, started, the output, finished at least
        with pytest.raises(RunNotFound):
            await service.get_run(old)
        for table in ("events", "steps", "runs"):
            assert _rows(engine_world, table, old) == 0, table
        remaining, total = await service.list_runs()
        assert total == 4 and {r.run_id for r in remaining} == {*kept, *others}
        assert await events_of(service, kept[0])  # the kept runs keep their events
        assert (await service.prune()).runs == 0  # nothing more to do


async def test_max_age_counts_from_when_the_run_finished(engine_world: EngineWorld) -> None:
    engine_world.job("noop", {"command": "true"})
    async with engine_world.open(**{**QUIET, "retention_max_age": 30 * DAY}) as service:
        run_ids = await _runs(service, "noop", 3)

        assert (await service.prune(now=utcnow() + timedelta(days=29))).runs == 0
        report = await service.prune(now=utcnow() + timedelta(days=31))

        assert report.runs == 3
        assert (await service.list_runs())[1] == 0
        assert all(_rows(engine_world, "events", r) == 0 for r in run_ids)


async def test_a_jobs_retention_block_overrides_the_server_defaults(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("short", {"command": "true", "retention": {"max_runs": 1}})
    engine_world.job("forever", {"command": "true", "retention": {"max_age": 0}})
    engine_world.job("plain", {"command": "true"})
    async with engine_world.open(**{**QUIET, "retention_max_age": 30 * DAY}) as service:
        await _runs(service, "short", 3)
        await _runs(service, "forever", 2)
        await _runs(service, "plain", 2)

        now_report = await service.prune()
        assert now_report.jobs == {"short": 2}  # its count limit; the age default is not due

        later = await service.prune(now=utcnow() + timedelta(days=40))
        # `forever` turned the age limit off; `short` keeps its newest run by count but
        # inherits the age default; `plain` follows the defaults
        assert later.jobs == {"short": 1, "plain": 2}
        remaining, _ = await service.list_runs()
        assert {r.job_id for r in remaining} == {"forever"}


async def test_a_dry_run_changes_nothing_and_reports_what_would_go(
    engine_world: EngineWorld,
) -> None:
    engine_world.job(
        "report", {"command": 'echo "$FLWD_RUN_ID" > "$FLWD_ARTIFACTS_DIR/own.txt"; echo x'}
    )
    async with engine_world.open(**{**QUIET, "retention_max_runs": 1}) as service:
        await _runs(service, "report", 3)
        _age_blobs(engine_world)
        before = (await service.list_runs())[1], _blobs(engine_world)

        plan = await service.prune(dry_run=True)

        assert plan.dry_run and (plan.runs, plan.artifacts, plan.blobs) == (2, 2, 2)
        assert plan.blob_bytes > 0 and plan.events > 0
        assert ((await service.list_runs())[1], _blobs(engine_world)) == before
        done = await service.prune()
        assert not done.dry_run
        assert (done.runs, done.events, done.artifacts, done.blobs, done.blob_bytes) == (
            plan.runs,
            plan.events,
            plan.artifacts,
            plan.blobs,
            plan.blob_bytes,
        )
        assert len(_blobs(engine_world)) == 1


async def test_runs_that_are_not_terminal_are_never_pruned(engine_world: EngineWorld) -> None:
    engine_world.job("sleeper", {"command": "echo started; sleep 30"})
    async with engine_world.open(
        **{**QUIET, "retention_max_runs": 1}, max_concurrency=1
    ) as service:
        running = await service.create_run("sleeper", {})
        pending = await service.create_run("sleeper", {})

        async def started() -> bool:
            return (await service.get_run(running.run_id)).status is RunStatus.RUNNING

        await wait_for(started, what="the first run to start")
        await wait_for(
            lambda: _rows(engine_world, "events", running.run_id) >= 3, what="its output"
        )

        report = await service.prune(now=utcnow() + timedelta(days=400), max_age=1)
        assert report.runs == 0
        # even statements built for them delete nothing: they check the status again
        doomed = [
            Candidate(run_id=r.run_id, job_id="sleeper", events=1, last_event=1, artifacts=())
            for r in (running, pending)
        ]
        await service.store.submit(sql.delete_statements(doomed))
        for run in (running, pending):
            assert (await service.get_run(run.run_id)).status in (
                RunStatus.RUNNING,
                RunStatus.PENDING,
            )
            assert _rows(engine_world, "steps", run.run_id) == 1
        assert _rows(engine_world, "events", running.run_id) >= 3
        assert await sql.pruned_through(service.store) == 0

        await service.cancel_run(pending.run_id)
        await service.cancel_run(running.run_id)
        await finish(service, running)
        report = await service.prune(now=utcnow() + timedelta(days=400), max_age=1)
        assert report.runs == 2  # once finished, they go like any other


async def test_a_blob_shared_by_two_runs_stays_until_its_last_reference_goes(
    engine_world: EngineWorld,
) -> None:
    engine_world.job("report", {"command": 'printf "a,b\\n1,2\\n" > "$FLWD_ARTIFACTS_DIR/r.csv"'})
    async with engine_world.open(**QUIET) as service:
        _, second = await _runs(service, "report", 2)
        _age_blobs(engine_world)
        (blob,) = _blobs(engine_world)

        report = await service.prune(max_runs=1)

        assert (report.runs, report.artifacts, report.blobs) == (1, 1, 0)
        assert _blobs(engine_world) == [blob]
        artifacts, _ = await service.list_artifacts(run_id=second)
        _, path = await service.get_artifact(artifacts[0].id)
        assert path.read_bytes() == b"a,b\n1,2\n"

        report = await service.prune(now=utcnow() + timedelta(days=1), max_age=60)
        assert (report.runs, report.blobs, report.blob_bytes) == (1, 1, 8)
        assert _blobs(engine_world) == []


async def test_a_freshly_written_blob_is_kept_and_deleted_by_a_later_pass(
    engine_world: EngineWorld,
) -> None:
    """A blob written moments ago may belong to a run whose artifact row is not stored
    yet: kept, and tried again by the next pass."""
    engine_world.job("report", {"command": 'echo data > "$FLWD_ARTIFACTS_DIR/d.txt"'})
    async with engine_world.open(**QUIET) as service:
        await _runs(service, "report", 1)
        assert len(_blobs(engine_world)) == 1

        report = await service.prune(max_runs=0, max_age=1, now=utcnow() + timedelta(hours=1))
        assert (report.runs, report.blobs) == (1, 0)
        assert len(_blobs(engine_world)) == 1

        _age_blobs(engine_world)
        report = await service.prune()
        assert (report.runs, report.blobs) == (0, 1)
        assert _blobs(engine_world) == []


async def test_a_work_dir_left_behind_is_removed_with_its_run(engine_world: EngineWorld) -> None:
    engine_world.job("noop", {"command": "true"})
    async with engine_world.open(**QUIET) as service:
        old, _ = await _runs(service, "noop", 2)
        left = engine_world.data_dir / "work" / old / "stuff"
        left.mkdir(parents=True)
        (left / "file").write_text("x")

        assert (await service.prune(max_runs=1, dry_run=True)).workdirs == 1
        report = await service.prune(max_runs=1)

        assert (report.runs, report.workdirs) == (1, 1)
        assert not (engine_world.data_dir / "work" / old).exists()


async def test_resuming_from_a_pruned_event_id_is_refused(engine_world: EngineWorld) -> None:
    engine_world.job("noop", {"command": "echo hi"})
    engine_world.job("other", {"command": "true"})
    async with engine_world.open(**QUIET) as service:
        old = await run_job(service, "noop")
        old_last = (await events_of(service, old.run_id))[-1].id
        await _runs(service, "other", 1)
        await service.check_resume(0)  # nothing pruned yet
        await _runs(service, "noop", 1)
        assert (await service.prune(max_runs=1)).runs == 1

        with pytest.raises(EventsPruned) as caught:
            await service.check_resume(old_last - 1)
        assert caught.value.pruned_through == old_last
        await service.check_resume(old_last)  # it saw every pruned event
        await service.check_resume(None)  # a stream that starts live misses nothing
        # a job's stream is refused only for that job's pruned events
        with pytest.raises(EventsPruned):
            await service.check_resume(0, job_id="noop")
        await service.check_resume(0, job_id="other")
        # a stream of one run that still exists has all its events
        await service.check_resume(0, run_id=old.run_id)


async def test_the_background_pass_prunes_on_its_own(engine_world: EngineWorld) -> None:
    engine_world.job("noop", {"command": "true"})
    settings = {**QUIET, "retention_max_runs": 1, "prune_interval": 0.05}
    async with engine_world.open(**settings) as service:
        await _runs(service, "noop", 3)

        async def one_left() -> bool:
            return (await service.list_runs())[1] == 1

        await wait_for(one_left, timeout=10, what="the background pass")
    # closing the service stops the task (nothing left running in this loop)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "flwd-pruner" and not t.done()]


def test_the_retention_block_of_config_yaml(jobs_tree: JobsTree) -> None:
    jobs_tree.add("both", "command: x\nretention: {max_age: 90d, max_runs: 50}\n")
    jobs_tree.add("age", "command: x\nretention: {max_age: 0}\n")
    jobs_tree.add("bad-age", "command: x\nretention: {max_age: soon}\n")
    jobs_tree.add("bad-runs", "command: x\nretention: {max_runs: -1}\n")
    jobs_tree.add("typo", "command: x\nretention: {keep: 3}\n")
    assert jobs_tree.job("both").retention == RetentionSpec(max_age=90 * DAY, max_runs=50)
    assert jobs_tree.job("age").retention == RetentionSpec(max_age=0)
    assert jobs_tree.reasons("bad-age") == [
        "retention.max_age: 'soon' is not a duration; use forms like '90s', '15m', '1h30m'"
    ]
    assert jobs_tree.reasons("bad-runs") == ["retention.max_runs: expected `int` >= 0"]
    (typo,) = jobs_tree.reasons("typo")
    assert "keep" in typo


def test_a_jobs_block_replaces_only_the_limits_it_names() -> None:
    defaults = {"max_age": 30 * DAY, "max_runs": 1000}
    assert effective_policy(None, **defaults) == Policy(max_age=30 * DAY, max_runs=1000)
    assert effective_policy(RetentionSpec(max_runs=5), **defaults) == Policy(
        max_age=30 * DAY, max_runs=5
    )
    assert effective_policy(RetentionSpec(max_age=0, max_runs=0), **defaults).keeps_everything


def test_retention_settings_from_the_environment_and_their_defaults() -> None:
    defaults = load_settings({})
    assert (defaults.retention_max_age, defaults.retention_max_runs) == (30 * DAY, 1000)
    assert defaults.prune_interval == 600
    env = {
        "FLWD_RETENTION_MAX_AGE": "7d",
        "FLWD_RETENTION_MAX_RUNS": "0",
        "FLWD_PRUNE_INTERVAL": "1h",
    }
    settings = load_settings(env)
    assert (settings.retention_max_age, settings.retention_max_runs) == (7 * DAY, 0)
    assert settings.prune_interval == 3600
    assert load_settings(env, retention_max_runs=5).retention_max_runs == 5
    with pytest.raises(SettingsError, match="FLWD_RETENTION_MAX_AGE"):
        load_settings({"FLWD_RETENTION_MAX_AGE": "soon"})
    with pytest.raises(SettingsError, match="retention_max_runs"):
        load_settings({"FLWD_RETENTION_MAX_RUNS": "-1"})
