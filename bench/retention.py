"""Retention benchmark: how fast a pruning pass deletes, and what it costs everyone else.

    .venv/bin/python bench/retention.py [--runs 20000] [--events 6] [--jobs 4]

Fills a temporary store with `--runs` finished runs (spread over `--jobs` jobs, created
and finished 60 days ago, each with one step and `--events` event rows), then makes one
pass with the default policy (30 days, 1,000 runs per job) through the real `Pruner` and
`Store`, while two probes run on the same event loop:

- loop lag: a task sleeping 1 ms, recording how late it wakes up;
- write latency: every 5 ms a small write (a run's state change) is queued and its commit
  awaited, as the engine does for every state change.

The same probes run for 2 s with no pass first (the baseline). Not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ulid import ULID  # noqa: E402

from flwd.engine import retention  # noqa: E402
from flwd.engine.retention import Pruner  # noqa: E402
from flwd.models import utcnow  # noqa: E402
from flwd.settings import Settings  # noqa: E402
from flwd.storage.store import Store  # noqa: E402
from flwd.timefmt import iso  # noqa: E402


async def fill(store: Store, runs: int, events: int, jobs: int) -> str:
    """Insert the runs; returns the id of one kept run (for the write probe)."""
    when = utcnow() - datetime.timedelta(days=60)
    base = when.timestamp()
    event_id = 1
    batch: list[tuple[str, tuple[object, ...]]] = []
    keep = ""
    for i in range(runs):
        run_id = f"run_{ULID.from_timestamp(base + i / 1000)}"
        job_id = f"job-{i % jobs}"
        stamp = iso(when + datetime.timedelta(milliseconds=i))
        batch.append(
            (
                "INSERT INTO runs (run_id, job_id, tenant, status, args, job_digest, "
                "created_at, started_at, finished_at) VALUES (?, ?, 'default', 'success', "
                "'{}', 'x', ?, ?, ?)",
                (run_id, job_id, stamp, stamp, stamp),
            )
        )
        batch.append(
            (
                "INSERT INTO steps (run_id, step_id, position, status) "
                "VALUES (?, 'main', 0, 'success')",
                (run_id,),
            )
        )
        for _ in range(events):
            batch.append(
                (
                    "INSERT INTO events (id, last_id, run_id, job_id, type, ts, data) "
                    "VALUES (?, ?, ?, ?, 'run.started', ?, '{}')",
                    (event_id, event_id, run_id, job_id, stamp),
                )
            )
            event_id += 1
        if len(batch) >= 5000:
            await store.submit(batch)
            batch = []
        keep = run_id
    if batch:
        await store.submit(batch)
    return keep


async def probe(store: Store, run_id: str, stop: asyncio.Event) -> tuple[list[float], list[float]]:
    lags: list[float] = []
    writes: list[float] = []

    async def ticker() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    async def writer() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await store.submit([("UPDATE runs SET tenant = tenant WHERE run_id = ?", (run_id,))])
            writes.append(time.perf_counter() - start)
            await asyncio.sleep(0.005)

    await asyncio.gather(ticker(), writer())
    return lags, writes


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name}: p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, "
        f"max {ms[-1]:.2f} ms ({len(ms)} samples)"
    )


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flwd-bench-retention-"))
    try:
        settings = Settings(data_dir=str(tmp))
        async with Store(tmp / "flwd.db") as store:
            started = time.perf_counter()
            keep = await fill(store, args.runs, args.events, args.jobs)
            print(
                f"filled {args.runs} runs x {args.events} event rows in "
                f"{time.perf_counter() - started:.1f} s"
            )
            # the newest run of a job is kept by the count limit: probe writes go there
            pruner = Pruner(
                store,
                settings,
                blob_root=tmp / "artifacts",
                work_root=tmp / "work",
                job_retention=lambda job_id: None,
                active=list,
            )
            stop = asyncio.Event()
            idle = asyncio.create_task(probe(store, keep, stop))
            await asyncio.sleep(2)
            stop.set()
            idle_lags, idle_writes = await idle

            stop = asyncio.Event()
            busy = asyncio.create_task(probe(store, keep, stop))
            started = time.perf_counter()
            report = await pruner.prune(paced=args.paced)
            took = time.perf_counter() - started
            stop.set()
            lags, writes = await busy
        print(f"python {platform.python_version()}, {platform.machine()}")
        print(
            f"pass: {report.runs} runs, {report.events} event rows deleted in {took:.2f} s "
            f"({report.runs / took:,.0f} runs/s, {report.events / took:,.0f} event rows/s)"
        )
        print(summary("idle   loop lag     ", idle_lags))
        print(summary("idle   write commit ", idle_writes))
        print(summary("during loop lag     ", lags))
        print(summary("during write commit ", writes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--paced", action="store_true", help="as the background pass")
    parser.add_argument("--batch-rows", type=int, help="override BATCH_ROWS (A/B)")
    parser.add_argument("--batch-runs", type=int, help="override BATCH_RUNS (A/B)")
    options = parser.parse_args()
    if options.batch_rows:
        retention.BATCH_ROWS = options.batch_rows
    if options.batch_runs:
        retention.BATCH_RUNS = options.batch_runs
    print(f"batches of at most {retention.BATCH_RUNS} runs, ~{retention.BATCH_ROWS} event rows")
    asyncio.run(main(options))
