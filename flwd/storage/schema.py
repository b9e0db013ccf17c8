"""SQLite schema and migrations, keyed on `PRAGMA user_version`.

Each entry of `MIGRATIONS` moves the database from version `i` to `i + 1`; a migration is
never edited once released, only followed by a new one.
"""

from __future__ import annotations

import sqlite3

from flwd.errors import StorageError

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, steps, the event journal, artifacts, idempotency keys
    """
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
    """,
    # 2: the steps not ended yet, found at start-up in a few rows rather than a full scan
    # (a step left so in an ended run is repaired: see flwd.engine.recovery)
    """
    CREATE INDEX steps_unended ON steps(run_id) WHERE status IN ('pending', 'running');
    """,
    # 3: retention — finding a blob's last reference and a run's idempotency keys by
    # index, and per job the highest event id ever pruned (see flwd/storage/retention.py)
    """
    CREATE INDEX artifacts_sha256 ON artifacts(sha256);
    CREATE INDEX idempotency_keys_run ON idempotency_keys(run_id);
    CREATE TABLE pruned_events (
        job_id         TEXT PRIMARY KEY,
        pruned_through INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: a step's result event is `step.result` (it was `step.output`, which the contract
    # names log output): journals stored before read with the new name
    """
    UPDATE events SET type = 'step.result' WHERE type = 'step.output';
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's `user_version`; return the version.

    A database newer than this flwd is refused rather than silently misread.
    """
    row = conn.execute("PRAGMA user_version").fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"the database schema is version {current}, newer than this flwd "
            f"understands ({SCHEMA_VERSION}); upgrade flwd"
        )
    for version in range(current, SCHEMA_VERSION):
        conn.executescript(
            "BEGIN;\n" + MIGRATIONS[version] + f"\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
    return SCHEMA_VERSION
