"""Start-up check for steps left unended in ended runs, on a database of many runs.

    .venv/bin/python bench/recovery.py [--runs 1000000] [--trials 5]

Builds a database with flwd's own migrations and `--runs` ended single-step runs (plus
one ended run with a step left `running`), then times
`RunRepository.unended_steps_of_ended_runs()` through the real store, and, for
comparison, the same question asked as a plain JOIN without the partial index. Results
go to stdout; bench/README.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from flwd.storage.runs import RunRepository
from flwd.storage.schema import MIGRATIONS
from flwd.storage.store import Store

_PLAIN_JOIN = (
    "SELECT s.run_id, r.job_id, s.step_id, s.attempt, s.pgid FROM steps s "
    "JOIN runs r ON r.run_id = s.run_id WHERE s.status IN ('pending', 'running') "
    "AND r.status IN ('success', 'failed', 'cancelled') ORDER BY s.run_id, s.position"
)


def build(path: Path, runs: int) -> None:
    with sqlite3.connect(path) as conn:
        for version, script in enumerate(MIGRATIONS):
            conn.executescript(script + f"\nPRAGMA user_version = {version + 1};")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO runs (run_id, job_id, tenant, status, args, job_digest, created_at) "
            "SELECT printf('run_%026d', i), 'hello', 'default', 'success', '{}', '', "
            "'2026-11-29T18:00:00+00:00' FROM n",
            (runs - 1,),
        )
        conn.execute(
            "INSERT INTO steps (run_id, step_id, position, status) "
            "SELECT run_id, 'main', 0, 'success' FROM runs"
        )
        conn.execute(
            "UPDATE steps SET status = 'running' WHERE run_id = ?", (f"run_{runs // 2:026d}",)
        )


async def timed_repository(path: Path, trials: int) -> list[float]:
    times = []
    async with Store(path) as store:
        repo = RunRepository(store)
        for _ in range(trials):
            start = time.perf_counter()
            found = await repo.unended_steps_of_ended_runs()
            times.append(time.perf_counter() - start)
            assert len(found) == 1
    return times


def timed_plain_join(path: Path, trials: int) -> list[float]:
    times = []
    with sqlite3.connect(path) as conn:
        for _ in range(trials):
            start = time.perf_counter()
            assert len(conn.execute(_PLAIN_JOIN).fetchall()) == 1
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-recovery-") as tmp:
        path = Path(tmp) / "flwd.db"
        start = time.perf_counter()
        build(path, options.runs)
        print(f"built {options.runs} runs in {time.perf_counter() - start:.1f}s")
        ours = asyncio.run(timed_repository(path, options.trials))
        plain = timed_plain_join(path, options.trials)
        for name, times in (("partial index + CROSS JOIN", ours), ("plain JOIN", plain)):
            print(
                f"{name}: median {statistics.median(times) * 1000:.2f} ms, "
                f"max {max(times) * 1000:.2f} ms"
            )


if __name__ == "__main__":
    main()
