"""A realistic mix of jobs through flwd against the same work spawned bare, in one run.

    .venv/bin/python bench/realistic.py [--mixes 40] [--rounds 4] [--no-http]
    .venv/bin/python bench/realistic.py --ab [--rounds 6]   # each engine optimisation on/off

The mix is what a real user runs, three jobs, each a run of its own:

- `report`: a Python script of about 50 ms (interpreter start, some arithmetic, a 15 ms
  wait) printing 200 lines and writing a JSON result to `$FLWD_RESULT_FILE`;
- `pipeline`: a three-step DAG of shell steps: `fetch` writes a file, then `transform` and
  `count` (both need `fetch`) read it in parallel;
- `login`: a shell step given a user name and a secret token (`format: secret`), which it
  uses and, as scripts do, prints once (flwd masks it in the stored log).

The floor is the same work spawned bare with `asyncio.create_subprocess_exec`
(`start_new_session=True`, output read, the result file read back, the DAG's second level
run concurrently) in a directory made once per worker. flwd runs it (a) in-process through
`RunService` (create_run, then wait_run until terminal), like bench/engine.py, and (b)
through a real `flwd serve` over HTTP with `"async": false`. Floor and flwd alternate in
rounds, so load from anything else on the machine hits both alike; the load average is
printed with each part. The overhead of a run is flwd's latency less the floor's for the
same job (p50 and p95 of each); throughput is mixes per second.

`--ab` measures, for each engine optimisation that can be switched off from outside, its
gain on this mix: rounds alternate between the engine as it is and the engine without it
(in one process, same data dir), at concurrency 1 (latency) and 8 (throughput).

Talks only to 127.0.0.1 and signals only the server it started. Not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import LeanClient, Server  # noqa: E402
from flwd.engine import spawn, step_process  # noqa: E402
from flwd.engine.run_driver import RunDriver  # noqa: E402
from flwd.engine.service import RunService  # noqa: E402
from flwd.jobs.registry import JobRegistry  # noqa: E402
from flwd.plugins import make_plugin_manager  # noqa: E402
from flwd.settings import JobSource, Settings  # noqa: E402
from flwd.states import RunStatus  # noqa: E402
from flwd.storage import store  # noqa: E402

REPORT_PY = """\
import json, os, time
total = 0
for i in range(200):
    total += sum(j * j for j in range(400))
    print(f"processed row {i}: running total {total}")
time.sleep(0.015)
with open(os.environ["FLWD_RESULT_FILE"], "w") as out:
    json.dump({"rows": 200, "total": total}, out)
"""
FETCH = 'printf "alpha\\nbeta\\ngamma\\n" > data.txt; echo fetched'
TRANSFORM = 'tr a-z A-Z < data.txt > upper.txt; echo "transformed $(wc -l < upper.txt) lines"'
COUNT = 'echo "counted $(wc -c < data.txt) bytes"'
LOGIN = (
    'echo "logging in as $FLWD_ARG_USER"; '
    'echo "using token $FLWD_ARG_TOKEN"; '
    'test "${#FLWD_ARG_TOKEN}" -gt 10 && echo "logged in"'
)
LOGIN_ARGS = {"user": "alice", "token": "s3cr3t-token-0123456789"}

JOBS: dict[str, dict[str, Any]] = {
    "report": {"steps": [{"id": "report", "script": "report.py"}]},
    "pipeline": {
        "steps": [
            {"id": "fetch", "run": FETCH},
            {"id": "transform", "run": TRANSFORM, "needs": "fetch"},
            {"id": "count", "run": COUNT, "needs": "fetch"},
        ]
    },
    "login": {
        "args": {
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "token": {"type": "string", "format": "secret"},
            },
            "required": ["user", "token"],
        },
        "command": LOGIN,
    },
}
ARGS: dict[str, dict[str, Any]] = {"report": {}, "pipeline": {}, "login": LOGIN_ARGS}


def write_jobs(root: Path) -> None:
    for job_id, config in JOBS.items():
        (root / job_id).mkdir(parents=True)
        (root / job_id / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "report" / "report.py").write_text(REPORT_PY)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


# -- measuring -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@dataclass
class Sample:
    """Latencies per job and the time taken for a number of mixes."""

    mixes: int = 0
    elapsed: float = 0.0
    #: CPU seconds (user + system, every thread) this process and the server (if any)
    #: spent: unlike wall time, hardly changed by other load on the machine
    cpu: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)

    def add(self, other: Sample) -> None:
        self.mixes += other.mixes
        self.elapsed += other.elapsed
        self.cpu += other.cpu
        for job_id, values in other.latencies.items():
            self.latencies.setdefault(job_id, []).extend(values)
        self.loads += other.loads

    @property
    def rate(self) -> float:
        return self.mixes / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per mix (the jobs' own processes not counted)."""
        return self.cpu / self.mixes * 1000 if self.mixes else 0.0


Runner = Callable[[str, int], Awaitable[None]]


#: CPU seconds used so far by other processes taking part (the server), if any
OTHER_CPU: list[Callable[[], float]] = []


def cpu_now() -> float:
    return time.process_time() + sum(f() for f in OTHER_CPU)


async def drive(mixes: int, concurrency: int, one: Runner) -> Sample:
    """`mixes` times the three jobs, by `concurrency` workers (worker n runs its jobs in
    order); the latency of each run, and CPU time used."""
    sample = Sample(mixes=mixes, loads=[load()])
    remaining = mixes

    async def worker(n: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            for job_id in JOBS:
                start = time.perf_counter()
                await one(job_id, n)
                sample.latencies.setdefault(job_id, []).append(time.perf_counter() - start)

    cpu = cpu_now()
    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    sample.elapsed = time.perf_counter() - start
    sample.cpu = cpu_now() - cpu
    return sample


# -- the floor -------------------------------------------------------------------------------


class Floor:
    """The mix spawned bare: one directory per worker, made once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "floor-report.py"
        self.script.write_text(REPORT_PY)
        self.base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}

    def workdir(self, worker: int) -> Path:
        path = self.tmp / f"floor-{worker}"
        path.mkdir(exist_ok=True)
        return path

    async def _spawn(self, argv: list[str], cwd: Path, env: dict[str, str]) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**self.base, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {err.decode()}")
        return out

    async def __call__(self, job_id: str, worker: int) -> None:
        cwd = self.workdir(worker)
        if job_id == "report":
            result = cwd / "result.json"
            out = await self._spawn(
                [sys.executable, str(self.script)], cwd, {"FLWD_RESULT_FILE": str(result)}
            )
            assert out.count(b"\n") == 200
            assert json.loads(result.read_bytes())["rows"] == 200
        elif job_id == "pipeline":
            await self._spawn(["/bin/sh", "-c", FETCH], cwd, {})
            await asyncio.gather(
                self._spawn(["/bin/sh", "-c", TRANSFORM], cwd, {}),
                self._spawn(["/bin/sh", "-c", COUNT], cwd, {}),
            )
        else:
            env = {"FLWD_ARG_USER": LOGIN_ARGS["user"], "FLWD_ARG_TOKEN": LOGIN_ARGS["token"]}
            out = await self._spawn(["/bin/sh", "-c", LOGIN], cwd, env)
            assert out.endswith(b"logged in\n")


# -- flwd ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def engine(tmp: Path, name: str) -> AsyncIterator[RunService]:
    settings = Settings(
        data_dir=str(tmp / f"data-{name}"),
        sources=(JobSource(name="local-fs", path=str(tmp / "jobs")),),
        watch=False,
        max_queue=100_000,
    )
    pm = make_plugin_manager(load_entrypoints=False)
    async with RunService(settings, JobRegistry(settings, pm), pm) as service:
        yield service


def through(service: RunService) -> Runner:
    async def one(job_id: str, worker: int) -> None:
        run = await service.create_run(job_id, ARGS[job_id])
        done = await service.wait_run(run.run_id)
        if done.status is not RunStatus.SUCCESS:
            raise RuntimeError(f"{job_id} ended {done.status}: {done.error}")

    return one


def over_http(client: LeanClient) -> Runner:
    async def one(job_id: str, worker: int) -> None:
        body = {"job_id": job_id, "args": ARGS[job_id], "async": False}
        status, run = await client.post("/runs", body)
        if run.get("status") != "success":
            raise RuntimeError(f"{job_id}: {status} {str(run)[:300]}")

    return one


async def compare(
    sides: dict[str, Runner], concurrency: int, mixes: int, rounds: int
) -> dict[str, Sample]:
    """The sides in alternating rounds (the order flips every round); totals per side."""
    totals = {name: Sample() for name in sides}
    order = list(sides)
    for _ in range(rounds):
        for name in order:
            totals[name].add(await drive(mixes, concurrency, sides[name]))
        order.reverse()
    return totals


# -- optimisations switched off from outside (A/B) -------------------------------------------


@contextlib.contextmanager
def without(optimisation: str) -> Iterator[None]:
    """The engine without one optimisation, for as long as the block runs."""
    if optimisation == "posix_spawn":  # Popen on the loop's thread (spawn.py's fallback)
        saved = spawn._libc.usable
        spawn._libc.usable = False
        try:
            yield
        finally:
            spawn._libc.usable = saved
    elif optimisation == "spawn threads":  # posix_spawn always on the loop's thread
        real = step_process.spawn

        async def on_loop(*args: Any, **kwargs: Any) -> int:
            return await real(*args, **{**kwargs, "busy": False})

        step_process.spawn = on_loop  # type: ignore[assignment]
        try:
            yield
        finally:
            step_process.spawn = real
    elif optimisation == "inline commits":  # every batch to the writer's thread
        saved_count = store._INLINE_STATEMENTS
        store._INLINE_STATEMENTS = 0
        try:
            yield
        finally:
            store._INLINE_STATEMENTS = saved_count
    elif optimisation == "pidfd watching":  # the exit of a long step polled for instead
        pidfd_open = os.pidfd_open

        def refuse(pid: int, flags: int = 0) -> int:
            raise OSError(38, "pidfds switched off for the benchmark")

        os.pidfd_open = refuse
        try:
            yield
        finally:
            os.pidfd_open = pidfd_open
    elif optimisation == "one-step await":  # a lone step run as a task, like a DAG's
        lone = RunDriver._run_steps
        RunDriver._run_steps = RunDriver._run_dag  # type: ignore[method-assign]
        try:
            yield
        finally:
            RunDriver._run_steps = lone  # type: ignore[method-assign]
    elif optimisation == "commit linger":  # a write nobody waits for is committed at once
        saved_linger = store._LINGER
        store._LINGER = 0
        try:
            yield
        finally:
            store._LINGER = saved_linger
    else:
        raise ValueError(optimisation)


OPTIMISATIONS = (
    "posix_spawn",
    "spawn threads",
    "inline commits",
    "pidfd watching",
    "commit linger",
    "one-step await",
)


async def ab(tmp: Path, rounds: int, mixes: dict[int, int], only: list[str]) -> list[str]:
    lines = [
        "| optimisation | c | with: mixes/s | without | gain | with: mix p50 ms | without | "
        "gain ms | with: CPU ms/mix | without | gain ms | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    async with engine(tmp, "ab") as service:
        one = through(service)
        await drive(8, 4, one)  # warm-up
        for name in only:
            for c, n in mixes.items():
                # the switch is flipped around each round, not each run
                totals = {"with": Sample(), "without": Sample()}
                for r in range(rounds):
                    for side in ("with", "without") if r % 2 == 0 else ("without", "with"):
                        if side == "with":
                            part = await drive(n, c, one)
                        else:
                            with without(name):
                                part = await drive(n, c, one)
                        totals[side].add(part)
                on, no = totals["with"], totals["without"]
                mix_on = sum(pct(v, 0.5) for v in on.latencies.values())
                mix_no = sum(pct(v, 0.5) for v in no.latencies.values())
                loads = on.loads + no.loads
                lines.append(
                    f"| {name} | {c} | {on.rate:.1f} | {no.rate:.1f} | "
                    f"{on.rate / no.rate - 1:+.1%} | {mix_on:.1f} | {mix_no:.1f} | "
                    f"{mix_no - mix_on:+.2f} | {on.cpu_ms:.2f} | {no.cpu_ms:.2f} | "
                    f"{no.cpu_ms - on.cpu_ms:+.2f} | "
                    f"{min(loads, key=float)}-{max(loads, key=float)} |"
                )
                print(lines[-1], flush=True)
    return lines


# -- main ------------------------------------------------------------------------------------


def table(title: str, totals: dict[str, Sample], floor: str = "floor") -> list[str]:
    base = totals[floor]
    lines = [
        f"{title}",
        "",
        "| side | job | p50 ms | p95 ms | overhead p50 ms | overhead p95 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, sample in totals.items():
        for job_id in JOBS:
            values, bare = sample.latencies[job_id], base.latencies[job_id]
            over50 = pct(values, 0.5) - pct(bare, 0.5)
            over95 = pct(values, 0.95) - pct(bare, 0.95)
            lines.append(
                f"| {name} | {job_id} | {pct(values, 0.5):.1f} | {pct(values, 0.95):.1f} | "
                + ("- | - |" if name == floor else f"{over50:+.2f} | {over95:+.2f} |")
            )
    lines.append("")
    for name, sample in totals.items():
        share = "" if name == floor else f" = {sample.rate / base.rate:.0%} of the floor's"
        per_run = (1 / sample.rate - 1 / base.rate) * 1000 / len(JOBS) if sample.rate else 0
        extra = "" if name == floor else f"; {per_run:+.2f} ms per run"
        cpu = sample.cpu_ms - base.cpu_ms
        cpu_extra = "" if name == floor else f" ({cpu / len(JOBS):+.2f} ms per run)"
        lines.append(
            f"- {name}: {sample.mixes} mixes in {sample.elapsed:.1f} s, "
            f"{sample.rate:.1f} mixes/s{share}{extra}; CPU {sample.cpu_ms:.2f} ms per "
            f"mix{cpu_extra} (load {min(sample.loads, key=float)}-"
            f"{max(sample.loads, key=float)})"
        )
    return lines


async def main(opts: argparse.Namespace) -> list[str]:
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="flwd-realistic-") as name:
        tmp = Path(name)
        write_jobs(tmp / "jobs")
        floor = Floor(tmp)
        mixes = {1: opts.mixes // 2, 8: opts.mixes}
        if opts.ab:
            only = opts.only or list(OPTIMISATIONS)
            return await ab(tmp, opts.rounds, mixes, only)
        async with engine(tmp, "inproc") as service:
            flwd = through(service)
            await drive(4, 2, floor)
            await drive(4, 2, flwd)  # warm-up
            for c, n in mixes.items():
                totals = await compare({"floor": floor, "flwd": flwd}, c, n, opts.rounds)
                out += [*table(f"In-process engine, concurrency {c}:", totals), ""]
                print("\n".join(out[-12:]), flush=True)
        if not opts.no_http:
            (tmp / "data").mkdir()
            server = Server(tmp)  # serves tmp/jobs with tmp/data
            OTHER_CPU.append(server.cpu_s)
            # the lean client of bench/api.py (httpx cost more CPU per request than the
            # server's own handling of it), with the benchmark profile's admin token
            client = LeanClient(server.port, server.token)
            try:
                http = over_http(client)
                await drive(4, 2, http)  # warm-up
                for c, n in mixes.items():
                    totals = await compare({"floor": floor, "http": http}, c, n, opts.rounds)
                    out += [
                        *table(f'`flwd serve`, HTTP `"async": false`, concurrency {c}:', totals),
                        "",
                    ]
                    print("\n".join(out[-12:]), flush=True)
            finally:
                client.close()
                server.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixes", type=int, default=40, help="mixes per round at c=8 (c=1: half)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per side")
    parser.add_argument("--no-http", action="store_true", help="skip the `flwd serve` part")
    parser.add_argument("--ab", action="store_true", help="measure each optimisation on/off")
    parser.add_argument("--only", action="append", choices=OPTIMISATIONS, help="with --ab")
    options = parser.parse_args()
    started = load()
    lines = asyncio.run(main(options))
    header = (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, `python bench/realistic.py {' '.join(sys.argv[1:])}`, "
        f"load average at start {started}, at end {load()}"
    )
    print("\n" + "\n".join([header, "", *lines]))
