"""Retention in SQL: which finished runs a policy lets go, the statements that delete
them with everything stored about them, and the per-job watermark of pruned events.

A run is only ever selected, and only ever deleted, while its status is terminal: the
delete statements repeat the check, so a run that is not terminal is never touched
whatever a caller passes. Deletion is the caller's to batch (see
`flwd.engine.retention`); this module only builds statements and reads.

`pruned_events` keeps, per job, the highest event id that pruning ever deleted. A stream
resuming after an id below it would have a gap where the pruned events were, so it is
refused (`EventsPruned`) instead of silently skipping them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
from ulid import ULID

from flwd.states import TERMINAL_RUN
from flwd.storage.store import Statement, Store
from flwd.timefmt import iso

_TERMINAL = tuple(sorted(status.value for status in TERMINAL_RUN))
_IS_TERMINAL = f"status IN ({', '.join(repr(value) for value in _TERMINAL)})"
#: the run, if it is terminal: every delete of a run's rows goes through this
_TERMINAL_RUN = f"SELECT run_id FROM runs WHERE run_id = ? AND {_IS_TERMINAL}"


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """The effective rule for one job: `max_age` seconds after a run finished, and the
    newest `max_runs` runs of the job kept; 0 turns a limit off."""

    max_age: float = 0.0
    max_runs: int = 0

    @property
    def keeps_everything(self) -> bool:
        return self.max_age <= 0 and self.max_runs <= 0


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A finished run a policy lets go, with what deleting it removes."""

    run_id: str
    job_id: str
    events: int  # stored rows (a chunk of output lines is one row)
    last_event: int  # highest event id among them (0 when none)
    artifacts: tuple[tuple[str, int], ...]  # (sha256, size) of each artifact row


async def job_ids(store: Store) -> list[str]:
    """Every job that has stored runs (including jobs no longer in the catalog)."""
    return [str(r[0]) for r in await store.fetchall("SELECT DISTINCT job_id FROM runs")]


async def count_boundary(store: Store, job_id: str, max_runs: int) -> str | None:
    """The id of the oldest run `max_runs` keeps (runs sort by id = creation time), or
    None when the job has no more than `max_runs` runs or no count limit applies."""
    if max_runs <= 0:
        return None
    row = await store.fetchone(
        "SELECT run_id FROM runs WHERE job_id = ? ORDER BY run_id DESC LIMIT 1 OFFSET ?",
        (job_id, max_runs - 1),
    )
    return str(row[0]) if row else None


def _age_bound(now: datetime, max_age: float) -> tuple[str, str]:
    """The cut-off time as stored text, and a run id below every run created after it
    (run ids are `run_<ULID>`, whose first ten characters are the creation time)."""
    cutoff = now - timedelta(seconds=max_age)
    prefix = str(ULID.from_timestamp(max(cutoff.timestamp(), 0.0)))[:10]
    return iso(cutoff), f"run_{prefix}{'Z' * 16}"


async def expired(
    store: Store,
    job_id: str,
    policy: Policy,
    *,
    now: datetime,
    boundary: str | None,
    before: str | None,
    limit: int,
) -> list[Candidate]:
    """Up to `limit` terminal runs of `job_id` the policy lets go, newest first, with ids
    below `before` (a cursor: the last id of the previous page). `boundary` is
    `count_boundary`'s answer for this pass."""
    reasons: list[str] = []
    params: list[object] = [job_id]
    upper = boundary
    if boundary is not None:
        reasons.append("run_id < ?")
        params.append(boundary)
    if policy.max_age > 0:
        cutoff, below = _age_bound(now, policy.max_age)
        reasons.append("(run_id < ? AND COALESCE(finished_at, created_at) < ?)")
        params += [below, cutoff]
        upper = below if upper is None else max(upper, below)
    if not reasons or upper is None:
        return []
    if before is not None:
        upper = min(upper, before)
    rows = await store.fetchall(
        f"SELECT run_id FROM runs WHERE job_id = ? AND run_id < ? AND {_IS_TERMINAL} "
        f"AND ({' OR '.join(reasons)}) ORDER BY run_id DESC LIMIT ?",
        (params[0], upper, *params[1:], limit),
    )
    run_ids = [str(r[0]) for r in rows]
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    events = {
        str(r[0]): (int(r[1]), int(r[2] or 0))
        for r in await store.fetchall(
            f"SELECT run_id, COUNT(*), MAX(last_id) FROM events WHERE run_id IN ({marks}) "
            "GROUP BY run_id",
            run_ids,
        )
    }
    artifacts: dict[str, list[tuple[str, int]]] = {}
    for r in await store.fetchall(
        f"SELECT run_id, sha256, size_bytes FROM artifacts WHERE run_id IN ({marks})", run_ids
    ):
        artifacts.setdefault(str(r[0]), []).append((str(r[1]), int(r[2])))
    return [
        Candidate(
            run_id=run_id,
            job_id=job_id,
            events=events.get(run_id, (0, 0))[0],
            last_event=events.get(run_id, (0, 0))[1],
            artifacts=tuple(artifacts.get(run_id, ())),
        )
        for run_id in run_ids
    ]


def delete_statements(candidates: Sequence[Candidate]) -> list[Statement]:
    """Delete the runs with their events, steps, artifact rows and idempotency keys, each
    only if the run is terminal, and raise each job's pruned-events watermark. Grouped by
    table, so the store applies each as one `executemany`."""
    statements: list[Statement] = []
    for table in ("events", "steps", "artifacts", "idempotency_keys"):
        sql = f"DELETE FROM {table} WHERE run_id IN ({_TERMINAL_RUN})"
        statements += [(sql, (c.run_id,)) for c in candidates]
    statements += [
        (
            "INSERT INTO pruned_events (job_id, pruned_through) "
            f"SELECT job_id, ? FROM runs WHERE run_id = ? AND {_IS_TERMINAL} "
            "ON CONFLICT (job_id) DO UPDATE SET "
            "pruned_through = MAX(pruned_through, excluded.pruned_through)",
            (c.last_event, c.run_id),
        )
        for c in candidates
        if c.last_event
    ]
    # the runs last: the statements above find them by their (terminal) row
    statements += [
        (f"DELETE FROM runs WHERE run_id = ? AND {_IS_TERMINAL}", (c.run_id,)) for c in candidates
    ]
    return statements


async def references(store: Store, sha256: str) -> int:
    """How many artifact rows point at a blob."""
    row = await store.fetchone("SELECT COUNT(*) FROM artifacts WHERE sha256 = ?", (sha256,))
    return int(row[0]) if row else 0


async def pruned_through(store: Store, job_id: str | None = None) -> int:
    """The highest event id pruning ever deleted: of `job_id`'s runs, or of any run."""
    if job_id is None:
        row = await store.fetchone("SELECT MAX(pruned_through) FROM pruned_events")
    else:
        row = await store.fetchone(
            "SELECT pruned_through FROM pruned_events WHERE job_id = ?", (job_id,)
        )
    return int(row[0]) if row and row[0] is not None else 0
