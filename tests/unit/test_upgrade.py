"""Upgrades: a data dir written by the release before the `step.result` rename (schema
version 1, commit fb565a0) opens with this flwd, and its runs, steps, logs, events and
artifacts read back exactly.

The old database is built here from that release's DDL and the rows it stored for a real
run (captured from it: a two-step job with stdout and stderr lines, step results and an
artifact), so the test does not depend on git or on the old code at run time.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime

from flwd.models import Artifact, Event, LogLine, Result, Run, Step
from flwd.states import RunStatus, StepStatus
from flwd.storage.schema import SCHEMA_VERSION
from tests.unit.engine_support import EngineWorld, events_of, run_job

pytest_plugins = ["tests.unit.conftest_engine"]

#: the schema of release fb565a0 (its migration 1, verbatim), at `user_version` 1
V1_SCHEMA = """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        job_id      TEXT NOT NULL,
        tenant      TEXT NOT NULL,
        status      TEXT NOT NULL,
        reason      TEXT,
        error       TEXT,
        exit_code   INTEGER,
        signal      INTEGER,
        args        BLOB NOT NULL,          -- JSON, secret values already masked
        has_secrets INTEGER NOT NULL DEFAULT 0,
        result      BLOB,                   -- JSON of flwd.models.Result
        job_digest  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        started_at  TEXT,
        finished_at TEXT
    );
    CREATE INDEX runs_job ON runs(job_id, run_id);
    CREATE INDEX runs_status ON runs(status, run_id);

    CREATE TABLE steps (
        run_id      TEXT NOT NULL,
        step_id     TEXT NOT NULL,
        position    INTEGER NOT NULL,
        status      TEXT NOT NULL,
        attempt     INTEGER NOT NULL DEFAULT 0,
        pgid        INTEGER,                -- process group while running (crash recovery)
        reason      TEXT,
        error       TEXT,
        exit_code   INTEGER,
        signal      INTEGER,
        result      BLOB,
        started_at  TEXT,
        finished_at TEXT,
        PRIMARY KEY (run_id, step_id)
    );

    -- One row is one event, or a chunk of output lines holding ids id..last_id:
    -- storing lines in chunks is what lets a chatty job write at disk speed.
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        last_id  INTEGER NOT NULL,
        run_id   TEXT NOT NULL,
        job_id   TEXT NOT NULL,
        type     TEXT NOT NULL,
        ts       TEXT NOT NULL,
        data     BLOB NOT NULL,            -- JSON object
        text     TEXT                      -- output lines joined by newlines (run.output only)
    );
    CREATE INDEX events_run ON events(run_id, id);
    CREATE INDEX events_job ON events(job_id, id);

    CREATE TABLE artifacts (
        id          TEXT PRIMARY KEY,
        run_id      TEXT NOT NULL,
        name        TEXT NOT NULL,
        path        TEXT NOT NULL,
        media_type  TEXT NOT NULL,
        size_bytes  INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX artifacts_run ON artifacts(run_id, id);

    CREATE TABLE idempotency_keys (
        tenant      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (tenant, key)
    );

"""

RUN = "run_01M8MCF6XBX299JDCN3Z7VVAWA"
JOB = "demo/report"
SHA = "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470"
CSV = b"a,b\n1,2\n"

#: the rows that release stored for the run, as it stored them: output as chunks of
#: lines (ids `id..last_id`, lines joined by newlines in `text`), results as `step.output`
V1_ROWS: dict[str, list[tuple[object, ...]]] = {
    "runs": [
        (
            RUN, JOB, "default", "success", None, None, None, None, b"{}", 0,
            b'{"value":{"url":"report.csv"},"steps":{"fetch":{"rows":3},'
            b'"publish":{"url":"report.csv"}}}',
            "f639337250bd7f1151aea045a6033e988f20b8a8c45565b3bff97d8fb16ee003",
            "2026-11-29T19:28:19.883777Z", "2026-11-29T19:28:19.883982Z",
            "2026-11-29T19:28:19.952472Z",
        ),
    ],
    "steps": [
        (
            RUN, "fetch", 0, "success", 0, None, None, None, 0, None, b'{"rows":3}',
            "2026-11-29T19:28:19.884068Z", "2026-11-29T19:28:19.911625Z",
        ),
        (
            RUN, "publish", 1, "success", 0, None, None, None, 0, None,
            b'{"url":"report.csv"}',
            "2026-11-29T19:28:19.911848Z", "2026-11-29T19:28:19.929442Z",
        ),
    ],
    "events": [
        (1, 1, RUN, JOB, "run.created", "2026-11-29T19:28:19.883850Z",
         b'{"status":"pending","tenant":"default","args":{}}', None),
        (2, 2, RUN, JOB, "run.started", "2026-11-29T19:28:19.884019Z",
         b'{"status":"running"}', None),
        (3, 3, RUN, JOB, "step.started", "2026-11-29T19:28:19.884093Z",
         b'{"step_id":"fetch","attempt":0}', None),
        (4, 6, RUN, JOB, "run.output", "2026-11-29T19:28:19.908169Z",
         b'{"level":"info","stream":"stdout","step_id":"fetch"}', "row 1\nrow 2\nrow 3"),
        (7, 7, RUN, JOB, "run.output", "2026-11-29T19:28:19.908285Z",
         b'{"level":"error","stream":"stderr","step_id":"fetch"}', "warn: slow"),
        (8, 8, RUN, JOB, "step.output", "2026-11-29T19:28:19.911563Z",
         b'{"step_id":"fetch","value":{"rows":3}}', None),
        (9, 9, RUN, JOB, "step.finished", "2026-11-29T19:28:19.911667Z",
         b'{"step_id":"fetch","status":"success","attempt":0,"reason":null,'
         b'"exit_code":0,"signal":null,"error":null}', None),
        (10, 10, RUN, JOB, "step.started", "2026-11-29T19:28:19.911874Z",
         b'{"step_id":"publish","attempt":0}', None),
        (11, 11, RUN, JOB, "run.output", "2026-11-29T19:28:19.927292Z",
         b'{"level":"info","stream":"stdout","step_id":"publish"}', "publishing"),
        (12, 12, RUN, JOB, "step.output", "2026-11-29T19:28:19.929385Z",
         b'{"step_id":"publish","value":{"url":"report.csv"}}', None),
        (13, 13, RUN, JOB, "step.finished", "2026-11-29T19:28:19.929483Z",
         b'{"step_id":"publish","status":"success","attempt":0,"reason":null,'
         b'"exit_code":0,"signal":null,"error":null}', None),
        (14, 14, RUN, JOB, "run.finished", "2026-11-29T19:28:19.952542Z",
         b'{"status":"success"}', None),
    ],
    "artifacts": [
        (
            "artifact_01M8MCF6Z19CMK8YK3GZZ6VD28", RUN, "report.csv", "report.csv",
            "text/csv", 8, SHA, "2026-11-29T19:28:19.952113Z",
        ),
    ],
}  # fmt: skip


def _ts(seconds: float) -> datetime:
    """A time of the captured run: 2026-11-29 19:28:`seconds` UTC."""
    whole = int(seconds)
    return datetime(2026, 11, 29, 19, 28, whole, round((seconds - whole) * 1e6), tzinfo=UTC)


def _write_v1_data_dir(world: EngineWorld) -> None:
    world.data_dir.mkdir(mode=0o700, parents=True)
    with sqlite3.connect(world.data_dir / "flwd.db") as db:
        db.executescript(V1_SCHEMA + "\nPRAGMA user_version = 1;")
        for table, rows in V1_ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    db.close()
    blob = world.data_dir / "artifacts" / SHA[:2] / SHA
    blob.parent.mkdir(parents=True)
    blob.write_bytes(CSV)
    assert hashlib.sha256(CSV).hexdigest() == SHA


async def test_a_data_dir_of_the_previous_release_reads_back_after_the_upgrade(
    engine_world: EngineWorld,
) -> None:
    _write_v1_data_dir(engine_world)
    engine_world.job("demo/echo", {"command": "echo after the upgrade"})
    async with engine_world.open() as service:
        run = await service.get_run(RUN)
        assert run == Run(
            run_id=RUN,
            job_id=JOB,
            status=RunStatus.SUCCESS,
            created_at=_ts(19.883777),
            started_at=_ts(19.883982),
            finished_at=_ts(19.952472),
            result=Result(
                value={"url": "report.csv"},
                steps={"fetch": {"rows": 3}, "publish": {"url": "report.csv"}},
            ),
            job_digest="f639337250bd7f1151aea045a6033e988f20b8a8c45565b3bff97d8fb16ee003",
        )
        assert await service.list_steps(RUN) == [
            Step(
                run_id=RUN,
                step_id="fetch",
                status=StepStatus.SUCCESS,
                started_at=_ts(19.884068),
                finished_at=_ts(19.911625),
                exit_code=0,
            ),
            Step(
                run_id=RUN,
                step_id="publish",
                status=StepStatus.SUCCESS,
                started_at=_ts(19.911848),
                finished_at=_ts(19.929442),
                exit_code=0,
            ),
        ]

        # a chunk of three lines is served as three lines, with the ids it held
        assert await service.read_logs(RUN) == [
            LogLine(id=4, timestamp=_ts(19.908169), level="info", message="row 1", step_id="fetch"),
            LogLine(id=5, timestamp=_ts(19.908169), level="info", message="row 2", step_id="fetch"),
            LogLine(id=6, timestamp=_ts(19.908169), level="info", message="row 3", step_id="fetch"),
            LogLine(
                id=7, timestamp=_ts(19.908285), level="error", message="warn: slow", step_id="fetch"
            ),
            LogLine(
                id=11,
                timestamp=_ts(19.927292),
                level="info",
                message="publishing",
                step_id="publish",
            ),
        ]

        def event(id: int, type: str, seconds: float, **data: object) -> Event:
            return Event(
                id=id, type=type, run_id=RUN, job_id=JOB, timestamp=_ts(seconds), data=data
            )

        def line(id: int, seconds: float, step: str, stream: str, message: str) -> Event:
            level = "info" if stream == "stdout" else "error"
            return event(
                id, "run.output", seconds, level=level, stream=stream, step_id=step, message=message
            )

        finished = {"status": "success", "attempt": 0, "reason": None, "exit_code": 0}
        finished |= {"signal": None, "error": None}
        assert await events_of(service, RUN) == [
            event(1, "run.created", 19.883850, status="pending", tenant="default", args={}),
            event(2, "run.started", 19.884019, status="running"),
            event(3, "step.started", 19.884093, step_id="fetch", attempt=0),
            line(4, 19.908169, "fetch", "stdout", "row 1"),
            line(5, 19.908169, "fetch", "stdout", "row 2"),
            line(6, 19.908169, "fetch", "stdout", "row 3"),
            line(7, 19.908285, "fetch", "stderr", "warn: slow"),
            event(8, "step.result", 19.911563, step_id="fetch", value={"rows": 3}),
            event(9, "step.finished", 19.911667, step_id="fetch", **finished),
            event(10, "step.started", 19.911874, step_id="publish", attempt=0),
            line(11, 19.927292, "publish", "stdout", "publishing"),
            event(12, "step.result", 19.929385, step_id="publish", value={"url": "report.csv"}),
            event(13, "step.finished", 19.929483, step_id="publish", **finished),
            event(14, "run.finished", 19.952542, status="success"),
        ]

        artifacts, total = await service.list_artifacts(run_id=RUN)
        assert total == 1
        assert artifacts == [
            Artifact(
                id="artifact_01M8MCF6Z19CMK8YK3GZZ6VD28",
                run_id=RUN,
                name="report.csv",
                path="report.csv",
                media_type="text/csv",
                size_bytes=8,
                sha256=SHA,
                created_at=_ts(19.952113),
            )
        ]
        _, blob = await service.get_artifact(artifacts[0].id)
        assert blob.read_bytes() == CSV

        # the journal goes on after the old one: a new run's events follow id 14
        after = await run_job(service, "demo/echo")
        assert after.status is RunStatus.SUCCESS
        new_events = await events_of(service, after.run_id)
        assert min(e.id for e in new_events) == 15
        assert [line.message for line in await service.read_logs(after.run_id)] == [
            "after the upgrade"
        ]

    with sqlite3.connect(engine_world.data_dir / "flwd.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        types = {row[0] for row in db.execute("SELECT DISTINCT type FROM events")}
    db.close()
    assert "step.output" not in types and "step.result" in types
