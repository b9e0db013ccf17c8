"""Repository of runs, steps, artifacts and idempotency keys.

Reads return msgspec Structs. Writes are returned as statements, so the engine can commit
a state change in the same transaction as the journal event that announces it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from flwd.models import Artifact, Result, Run, Step, StepSpec
from flwd.states import RunStatus
from flwd.storage.store import Statement, Store
from flwd.timefmt import iso

_encode = msgspec.json.Encoder().encode
_RUN_COLUMNS = (
    "run_id, job_id, tenant, status, reason, error, exit_code, signal, args, result, "
    "job_digest, created_at, started_at, finished_at"
)
_STEP_COLUMNS = (
    "run_id, step_id, status, attempt, started_at, finished_at, reason, exit_code, signal, error"
)
_ARTIFACT_COLUMNS = "id, run_id, name, path, media_type, size_bytes, sha256, created_at"


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict | list | Result):
        return _encode(value)
    return value


def insert_run(run: Run, *, has_secrets: bool) -> Statement:
    return (
        f"INSERT INTO runs ({_RUN_COLUMNS}, has_secrets) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.run_id,
            run.job_id,
            run.tenant,
            run.status.value,
            None,
            None,
            None,
            None,
            _encode(run.args),
            None,
            run.job_digest,
            iso(run.created_at),
            None,
            None,
            int(has_secrets),
        ),
    )


@functools.cache
def _update_sql(table: str, names: tuple[str, ...], where: str) -> str:
    """An UPDATE of `names` (a handful of combinations are used, so cached)."""
    return f"UPDATE {table} SET {', '.join(f'{name} = ?' for name in names)} WHERE {where}"


def update_run(run_id: str, **fields: Any) -> Statement:
    names = tuple(sorted(fields))
    return (
        _update_sql("runs", names, "run_id = ?"),
        (*[_value(fields[n]) for n in names], run_id),
    )


def insert_steps(run_id: str, steps: Iterable[StepSpec]) -> list[Statement]:
    sql = "INSERT INTO steps (run_id, step_id, position, status) VALUES (?, ?, ?, 'pending')"
    return [(sql, (run_id, step.id, i)) for i, step in enumerate(steps)]


def update_step(run_id: str, step_id: str, **fields: Any) -> Statement:
    names = tuple(sorted(fields))
    return (
        _update_sql("steps", names, "run_id = ? AND step_id = ?"),
        (*[_value(fields[n]) for n in names], run_id, step_id),
    )


def insert_artifact(artifact: Artifact) -> Statement:
    return (
        f"INSERT INTO artifacts ({_ARTIFACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            artifact.id,
            artifact.run_id,
            artifact.name,
            artifact.path,
            artifact.media_type,
            artifact.size_bytes,
            artifact.sha256,
            iso(artifact.created_at),
        ),
    )


def insert_idempotency_key(
    tenant: str, key: str, fingerprint: str, run_id: str, created_at: datetime
) -> Statement:
    return (
        "INSERT INTO idempotency_keys (tenant, key, fingerprint, run_id, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (tenant, key, fingerprint, run_id, iso(created_at)),
    )


def _run(row: Any) -> Run:
    names = _RUN_COLUMNS.split(", ")
    data = dict(zip(names, row, strict=True))
    data["args"] = msgspec.json.decode(data["args"])
    data["result"] = msgspec.json.decode(data["result"]) if data["result"] else None
    return msgspec.convert({k: v for k, v in data.items() if v is not None}, Run)


def _filters(**conditions: Any) -> tuple[str, list[Any]]:
    clauses = [f"{name} = ?" for name, value in conditions.items() if value is not None]
    params = [value for value in conditions.values() if value is not None]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class RunRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, run_id: str) -> Run | None:
        row = await self.store.fetchone(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        )
        return _run(row) if row else None

    async def has_secrets(self, run_id: str) -> bool:
        row = await self.store.fetchone("SELECT has_secrets FROM runs WHERE run_id = ?", (run_id,))
        return bool(row and row[0])

    async def page(
        self,
        *,
        job_id: str | None = None,
        status: RunStatus | None = None,
        tenant: str | None = None,
        q: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Run], int]:
        """A page of runs, newest first. `q` is a case-insensitive substring of the job
        id, the error or the stored (secret-masked) arguments; `created_from`/`created_to`
        bound `created_at` (inclusive/exclusive)."""
        where, params = _filters(
            job_id=job_id, status=status.value if status else None, tenant=tenant
        )
        extra: list[str] = []
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            extra.append(
                "(job_id LIKE ? ESCAPE '\\' OR error LIKE ? ESCAPE '\\'"
                " OR CAST(args AS TEXT) LIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern, pattern]
        # created_at is stored as `iso()` text (UTC, microseconds, `Z`): ordered as text
        if created_from is not None:
            extra.append("created_at >= ?")
            params.append(iso(created_from.astimezone(UTC)))
        if created_to is not None:
            extra.append("created_at < ?")
            params.append(iso(created_to.astimezone(UTC)))
        if extra:
            where = (where + " AND " if where else " WHERE ") + " AND ".join(extra)
        total_row = await self.store.fetchone(f"SELECT COUNT(*) FROM runs{where}", params)
        rows = await self.store.fetchall(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY run_id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_run(r) for r in rows], int(total_row[0]) if total_row else 0

    async def with_status(self, *statuses: RunStatus) -> list[Run]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self.store.fetchall(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({marks}) ORDER BY run_id",
            [s.value for s in statuses],
        )
        return [_run(r) for r in rows]

    async def steps(self, run_id: str) -> list[Step]:
        rows = await self.store.fetchall(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
        )
        names = _STEP_COLUMNS.split(", ")
        return [
            msgspec.convert({k: v for k, v in zip(names, r, strict=True) if v is not None}, Step)
            for r in rows
        ]

    async def step_pgids(self, run_id: str) -> list[int]:
        rows = await self.store.fetchall(
            "SELECT pgid FROM steps WHERE run_id = ? AND pgid IS NOT NULL", (run_id,)
        )
        return [int(r[0]) for r in rows]

    async def unended_steps_of_ended_runs(
        self,
    ) -> list[tuple[str, str, str, int, int | None]]:
        """(run id, job id, step id, attempt, pgid) of each step still `pending` or
        `running` in a run that is terminal: left so by a failure while finishing it."""
        rows = await self.store.fetchall(
            # CROSS JOIN keeps SQLite on the small partial index `steps_unended` rather
            # than walking every ended run (0.3 ms instead of 1.6 s with 1 M runs)
            "SELECT s.run_id, r.job_id, s.step_id, s.attempt, s.pgid FROM steps s "
            "CROSS JOIN runs r ON r.run_id = s.run_id "
            "WHERE s.status IN ('pending', 'running') "
            "AND r.status NOT IN ('pending', 'running') ORDER BY s.run_id, s.position"
        )
        return [
            (str(r[0]), str(r[1]), str(r[2]), int(r[3] or 0), None if r[4] is None else int(r[4]))
            for r in rows
        ]

    async def artifacts(
        self, *, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Artifact], int]:
        where, params = _filters(run_id=run_id)
        total_row = await self.store.fetchone(f"SELECT COUNT(*) FROM artifacts{where}", params)
        rows = await self.store.fetchall(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        names = _ARTIFACT_COLUMNS.split(", ")
        items = [msgspec.convert(dict(zip(names, r, strict=True)), Artifact) for r in rows]
        return items, int(total_row[0]) if total_row else 0

    async def artifact(self, artifact_id: str) -> Artifact | None:
        items, _ = await self._artifacts_where("id = ?", artifact_id)
        return items[0] if items else None

    async def _artifacts_where(self, clause: str, value: Any) -> tuple[list[Artifact], int]:
        rows = await self.store.fetchall(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE {clause}", (value,)
        )
        names = _ARTIFACT_COLUMNS.split(", ")
        return [msgspec.convert(dict(zip(names, r, strict=True)), Artifact) for r in rows], len(
            rows
        )

    async def idempotency_key(self, tenant: str, key: str) -> tuple[str, str] | None:
        row = await self.store.fetchone(
            "SELECT fingerprint, run_id FROM idempotency_keys WHERE tenant = ? AND key = ?",
            (tenant, key),
        )
        return (str(row[0]), str(row[1])) if row else None
