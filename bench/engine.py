"""Engine benchmark: flwd's run engine against the bare process-spawn floor, in one run.

    .venv/bin/python bench/engine.py [--quick] [--ingest-mb 200] [--no-ingest]
                                     [--containment auto|cgroup|subreaper]

Measures, on the standard asyncio loop (never uvloop: DESIGN section 12):

- floor: `asyncio.create_subprocess_exec('/bin/sh', '-c', 'echo x')` with
  `start_new_session=True` and both pipes read, at concurrency 1 and 16;
- flwd: the same no-op as a one-step job through `RunService` (create_run, then wait_run
  until terminal), at concurrency 1 and 16; latency is create_run call -> terminal;
- log ingest: one step printing N MB of ~100-byte lines, create -> terminal, with the
  output head cap raised so every line is stored, then with the default cap; peak RSS
  growth of this process during ingest (VmRSS sampled every 5 ms from a thread);
- peak RSS of the whole benchmark (VmHWM).

Self-contained: a temporary data dir and hand-built `JobSpec`s behind a minimal registry
(`.catalog.get(job_id)`), so job discovery is not part of what is measured. Not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flwd.engine.service import RunService  # noqa: E402
from flwd.errors import JobNotFound  # noqa: E402
from flwd.models import JobSpec, StepSpec  # noqa: E402
from flwd.plugins import make_plugin_manager  # noqa: E402
from flwd.settings import Settings  # noqa: E402
from flwd.states import TERMINAL_RUN, RunStatus  # noqa: E402

NOOP_ARGV = ("/bin/sh", "-c", "echo x")
LINE_BYTES = 100  # 99 characters and a newline


def producer_argv(megabytes: int) -> tuple[str, ...]:
    """A step writing `megabytes` MB (10^6 bytes) of 100-byte lines to stdout."""
    blocks = megabytes * 1_000_000 // (LINE_BYTES * 10_000)
    code = (
        "import sys\n"
        f"block = (b'x' * {LINE_BYTES - 1} + b'\\n') * 10000\n"
        "write = sys.stdout.buffer.write\n"
        f"for _ in range({blocks}):\n"
        "    write(block)\n"
    )
    return (sys.executable, "-c", code)


# -- measuring -------------------------------------------------------------------------------


def rss_kib(field_name: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Peak VmRSS of this process while the block runs, sampled from a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1024


@dataclass
class Throughput:
    name: str
    concurrency: int
    runs: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.runs / self.elapsed

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def drive(
    name: str, concurrency: int, runs: int, one: Callable[[], Awaitable[None]]
) -> Throughput:
    """`runs` calls of `one` by `concurrency` workers; latency of each call."""
    latencies: list[float] = []
    remaining = runs

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Throughput(name, concurrency, runs, time.perf_counter() - start, latencies)


# -- the floor -------------------------------------------------------------------------------


async def floor_once() -> None:
    proc = await asyncio.create_subprocess_exec(
        *NOOP_ARGV,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out == b"x\n"


async def floor_pipe_read(megabytes: int) -> float:
    """MB/s of reading the log producer's stdout with 64 KiB reads, storing nothing."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *producer_argv(megabytes),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    total = 0
    while chunk := await proc.stdout.read(64 * 1024):
        total += len(chunk)
    await proc.wait()
    return total / 1e6 / (time.perf_counter() - start)


# -- flwd ------------------------------------------------------------------------------------


class _Catalog:
    def __init__(self, jobs: list[JobSpec]) -> None:
        self._jobs = {job.id: job for job in jobs}

    def get(self, job_id: str) -> JobSpec:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None


class BenchRegistry:
    """The one thing `RunService` asks of a job registry: `.catalog.get(job_id)`."""

    def __init__(self, jobs: list[JobSpec]) -> None:
        self.catalog = _Catalog(jobs)


def job(job_id: str, argv: tuple[str, ...]) -> JobSpec:
    namespace, _, name = job_id.rpartition("/")
    return JobSpec(
        id=job_id,
        name=name,
        namespace=namespace,
        source="bench",
        path=job_id,
        args={"type": "object", "properties": {}, "additionalProperties": False},
        steps=(StepSpec(id="main", argv=argv),),
        digest=job_id,
    )


@contextlib.asynccontextmanager
async def engine(data_dir: Path, jobs: list[JobSpec], **settings: Any) -> Any:
    config = Settings(data_dir=str(data_dir), max_queue=100_000, **settings)
    service = RunService(
        config,
        BenchRegistry(jobs),  # type: ignore[arg-type]
        make_plugin_manager(load_entrypoints=False),
    )
    async with service:
        yield service


STALE_READS = [0]


async def flwd_once(service: RunService, job_id: str) -> None:
    run = await service.create_run(job_id, {})
    done = await service.wait_run(run.run_id)
    if done.status not in TERMINAL_RUN:
        # wait_run answered with a run that is not over: a stale read (see bench/README.md)
        STALE_READS[0] += 1
    if done.status is not RunStatus.SUCCESS:
        raise RuntimeError(f"{job_id} ended {done.status}: {done.error}")


@dataclass
class Ingest:
    label: str
    megabytes: int
    elapsed: float
    rss_growth_mb: float
    lines_stored: int

    @property
    def rate(self) -> float:
        return self.megabytes / self.elapsed


async def ingest(tmp: Path, label: str, megabytes: int, head_bytes: int | None) -> Ingest:
    data_dir = tmp / f"ingest-{label}"
    spec = job("bench/ingest", producer_argv(megabytes))
    extra = {} if head_bytes is None else {"output_head_bytes": head_bytes}
    async with engine(data_dir, [spec], **extra) as service:
        with RssSampler() as rss:
            start = time.perf_counter()
            await flwd_once(service, spec.id)
            elapsed = time.perf_counter() - start
        row = await service.store.fetchone(
            "SELECT COALESCE(SUM(last_id - id + 1), 0) FROM events WHERE type = 'run.output'"
        )
    shutil.rmtree(data_dir, ignore_errors=True)
    return Ingest(label, megabytes, elapsed, rss.growth_mb, int(row[0]) if row else 0)


# -- main ------------------------------------------------------------------------------------


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    rounds = 5
    per_round = {1: 30, 16: 120} if opts.quick else {1: 120, 16: 600}
    results: dict[str, Any] = {"throughput": [], "ingest": [], "load": [os.getloadavg()[0]]}
    tmp = Path(tempfile.mkdtemp(prefix="flwd-bench-"))
    try:
        if not opts.no_throughput:
            noop = job("bench/noop", NOOP_ARGV)
            async with engine(tmp / "noop", [noop], containment=opts.containment) as service:

                async def through_flwd() -> None:
                    await flwd_once(service, noop.id)

                await drive("warm-up", 4, 40, floor_once)
                await drive("warm-up", 4, 40, through_flwd)
                # Floor and flwd alternate in rounds, so load from anything else on the
                # machine hits both sides alike.
                for c, n in per_round.items():
                    floor = Throughput("floor", c, 0, 0.0)
                    flwd = Throughput("flwd", c, 0, 0.0)
                    for _ in range(rounds):
                        for total, one in ((floor, floor_once), (flwd, through_flwd)):
                            part = await drive(total.name, c, n, one)
                            total.runs += part.runs
                            total.elapsed += part.elapsed
                            total.latencies += part.latencies
                    results["throughput"] += [floor, flwd]
        if not opts.no_ingest:
            mb = opts.ingest_mb
            results["pipe_floor"] = await floor_pipe_read(mb)
            results["ingest"].append(await ingest(tmp, "everything stored", mb, 1 << 40))
            results["ingest"].append(await ingest(tmp, "default cap", mb, None))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load"].append(os.getloadavg()[0])
    results["peak_rss_mb"] = rss_kib("VmHWM") / 1024
    results["stale_reads"] = STALE_READS[0]
    return results


def report(results: dict[str, Any], command: str) -> str:
    rows = [
        "| what | concurrency | runs | runs/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_key = {(t.name, t.concurrency): t for t in results["throughput"]}
    for t in results["throughput"]:
        rows.append(
            f"| {t.name} | {t.concurrency} | {t.runs} | {t.rate:,.0f} | "
            f"{t.pct(0.50):.2f} | {t.pct(0.99):.2f} |"
        )
    verdicts = []
    for c in sorted({c for _, c in by_key}):
        floor, flwd = by_key[("floor", c)], by_key[("flwd", c)]
        share = flwd.rate / floor.rate
        gap = flwd.pct(0.50) - floor.pct(0.50)
        verdicts.append(
            f"- concurrency {c}: flwd = {share:.0%} of the floor's rate "
            f"(target >= 50%: {'met' if share >= 0.5 else 'MISSED'}); "
            f"p50 {gap:+.2f} ms vs the floor (target <= +5 ms: {'met' if gap <= 5 else 'MISSED'})"
        )
    if results["ingest"]:
        rows += ["", "| log ingest | MB | lines stored | s | MB/s | RSS growth MB |"]
        rows.append("|---|---:|---:|---:|---:|---:|")
        rows.append(
            f"| bare pipe read (64 KiB reads, nothing stored) | {results['ingest'][0].megabytes} "
            f"| - | - | {results['pipe_floor']:,.0f} | - |"
        )
        for i in results["ingest"]:
            rows.append(
                f"| flwd, {i.label} | {i.megabytes} | {i.lines_stored:,} | {i.elapsed:.2f} | "
                f"{i.rate:,.0f} | {i.rss_growth_mb:.1f} |"
            )
        full = results["ingest"][0]
        verdicts.append(
            f"- ingest (everything stored): {full.rate:.0f} MB/s "
            f"(target >= 50: {'met' if full.rate >= 50 else 'MISSED'}), RSS growth "
            f"{full.rss_growth_mb:.0f} MB (target < 100: "
            f"{'met' if full.rss_growth_mb < 100 else 'MISSED'})"
        )
    verdicts.append(f"- peak RSS of the benchmark process (VmHWM): {results['peak_rss_mb']:.0f} MB")
    verdicts.append(
        f"- wait_run answers that read a non-terminal run (stale snapshot): "
        f"{results['stale_reads']}"
    )
    start_load, end_load = results["load"]
    verdicts.append(f"- 1-minute load average at start / end: {start_load:.2f} / {end_load:.2f}")
    header = (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({platform.machine()}), standard asyncio loop, "
        f"`{command}`"
    )
    return "\n".join([header, "", *rows, "", *verdicts])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about 4x faster)")
    parser.add_argument("--ingest-mb", type=int, default=200, help="MB printed by the log job")
    parser.add_argument("--no-ingest", action="store_true", help="skip the log-ingest part")
    parser.add_argument("--no-throughput", action="store_true", help="skip the no-op runs")
    parser.add_argument(
        "--containment",
        choices=("auto", "cgroup", "subreaper"),
        default="auto",
        help="the engine's containment mode for the no-op runs",
    )
    options = parser.parse_args()
    outcome = asyncio.run(main(options))
    print(report(outcome, " ".join(["python bench/engine.py", *sys.argv[1:]])))
