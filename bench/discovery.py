"""Discovery benchmark: full scan of 10,000 generated job folders, and hot-reload latency.

    .venv/bin/python bench/discovery.py [--jobs 10000] [--trials 20]

Half of the generated args schemas are unique (so the meta-schema cache cannot help
them), half come from 20 shared templates; a quarter of the jobs run a script, a tenth
use numbered scripts. Results go to stdout; bench/README.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from flwd.jobs import metaschema, parallel
from flwd.jobs.registry import JobRegistry
from flwd.jobs.scanner import FolderScanner
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings


def schema_for(i: int) -> str:
    """A varied args schema in YAML; unique for even i, one of 20 templates for odd i."""
    key = f"p{i}" if i % 2 == 0 else f"t{i % 20}"
    return (
        "args:\n  type: object\n  properties:\n"
        f"    {key}:\n      type: string\n      description: value {key}\n"
        "      minLength: 1\n"
        "    count:\n      type: integer\n      minimum: 0\n      default: 3\n"
        "    mode:\n      enum: [fast, slow]\n"
        f"  required: [{key}]\n"
    )


def generate(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / f"team{i % 100:02d}" / f"job-{i:05d}"
        folder.mkdir(parents=True)
        head = f"description: generated job {i}\nversion: '1.{i}'\ntimeout: 5m\n"
        config = head + schema_for(i)
        if i % 10 == 0:  # numbered scripts
            (folder / "000_first.sh").write_text("#!/bin/sh\necho first\n")
            (folder / "100_second.py").write_text("print('second')\n")
        elif i % 4 == 1:  # a steps list with a script
            (folder / "run.sh").write_text("#!/usr/bin/env bash\necho run\n")
            config += "steps:\n  - id: a\n    script: run.sh\n  - id: b\n    run: echo b\n"
            config += "    needs: a\n"
        else:
            config += 'command: echo "hello $FLWD_ARG_COUNT"\n'
        (folder / "config.yaml").write_text(config)


def time_full_scan(root: Path, repeats: int, *, serial: bool = False) -> tuple[float, int, int]:
    """Best wall time of a cold full scan (new scanner, empty schema cache)."""
    threshold = parallel.PARALLEL_THRESHOLD
    if serial:
        parallel.PARALLEL_THRESHOLD = 10**9
    try:
        return _best_scan(root, repeats)
    finally:
        parallel.PARALLEL_THRESHOLD = threshold


def time_incremental(root: Path) -> float:
    """One rescan after one edited config, as the watcher triggers it."""
    scanner = FolderScanner("bench", root)
    scanner.scan()
    path = root / "team03" / "job-00003" / "config.yaml"
    path.write_text(path.read_text() + "\n")
    start = time.perf_counter()
    scanner.scan({str(path)})
    return time.perf_counter() - start


def _best_scan(root: Path, repeats: int) -> tuple[float, int, int]:
    best = float("inf")
    jobs = invalid = 0
    for _ in range(repeats):
        metaschema._cache.clear()  # every repeat pays for every schema, as a cold start does
        scanner = FolderScanner("bench", root)
        start = time.perf_counter()
        result = scanner.scan()
        best = min(best, time.perf_counter() - start)
        jobs, invalid = len(result.jobs), len(result.invalid)
    return best, jobs, invalid


async def reload_latency(root: Path, trials: int) -> list[float]:
    settings = Settings(sources=(JobSource(name="bench", path=str(root)),))
    registry = JobRegistry(settings, make_plugin_manager(load_entrypoints=False))
    latencies: list[float] = []
    async with registry:
        for trial in range(trials):
            version = registry.catalog.version
            if trial % 2 == 0:  # edit an existing job
                path = root / "team07" / "job-00007" / "config.yaml"
                text = path.read_text().replace("description:", f"description: edit {trial}", 1)
                start = time.perf_counter()
                path.write_text(text)
            else:  # add a new job folder
                folder = root / "added" / f"new-{trial}"
                start = time.perf_counter()
                folder.mkdir(parents=True)
                (folder / "config.yaml").write_text("command: echo new\n")
            await registry.wait_for_change(version, timeout=10)
            latencies.append(time.perf_counter() - start)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-") as tmp:
        root = Path(tmp) / "jobs"
        start = time.perf_counter()
        generate(root, options.jobs)
        print(f"generated {options.jobs} job folders in {time.perf_counter() - start:.1f} s")
        best, jobs, invalid = time_full_scan(root, options.repeats)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"full scan: best of {options.repeats}: {best:.3f} s ({jobs} jobs, {invalid} invalid)"
        )
        serial, _, _ = time_full_scan(root, options.repeats, serial=True)
        print(f"full scan on one core: best of {options.repeats}: {serial:.3f} s")
        print(f"incremental rescan after one edit: {time_incremental(root) * 1000:.0f} ms")
        print(f"peak RSS after scans: {rss_mb:.0f} MiB")
        latencies = sorted(asyncio.run(reload_latency(root, options.trials)))
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(
            f"hot reload ({options.trials} trials, {jobs} jobs watched): "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
        print(f"cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
