"""HTTP API benchmark against a real `flwd serve` process (not run by CI).

    .venv/bin/python bench/api.py [--runs 400] [--followers 500] [--lines 200]

Measures, in one go on this machine:
1. the bare spawn floor: asyncio `create_subprocess_exec` of the same no-op script with
   `start_new_session=True`, at the same concurrency as the API runs;
2. no-op runs created through the API per second, `async: true` (until all are
   terminal) and `async: false` (round trip latency p50/p99 and throughput);
3. SSE fan-out: N concurrent followers of one chatty run; every follower must receive
   every event; delivery lag = receive time - event timestamp (same clock);
4. server RSS idle and at its peak while loaded.

Everything talks to 127.0.0.1 only, and only the server process started here is signalled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

NOOP = "true"
CONCURRENCY = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def write_jobs(root: Path, lines: int) -> None:
    jobs = {
        "noop": {"command": NOOP},
        # Waits for the followers to connect, then prints one line every 10 ms.
        "chatty": {
            "args": {"type": "object", "properties": {"delay": {"type": "number"}}},
            "command": f'sleep "$FLWD_ARG_DELAY"; i=0; while [ $i -lt {lines} ]; do '
            'echo "line $i"; i=$((i+1)); sleep 0.01; done',
        },
    }
    for job_id, config in jobs.items():
        (root / job_id).mkdir(parents=True)
        (root / job_id / "config.yaml").write_text(json.dumps(config))


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        argv = [sys.executable, "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={tmp / 'jobs'}", "--data-dir", str(tmp / "data")]
        env = {**os.environ, "FLWD_MAX_QUEUE": "100000", "FLWD_KILL_GRACE": "1s"}
        self.log = (tmp / "server.log").open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log, cwd=tmp)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.api + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit("server did not become ready; see server.log")
        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


async def spawn_floor(n: int) -> float:
    """Runs/s of spawning the no-op script ourselves, output read, own session."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                NOOP,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await proc.communicate()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


async def api_async(client: httpx.AsyncClient, n: int) -> float:
    """Runs/s from the first POST until every run is terminal."""
    before = (await client.get("/runs", params={"job_id": "noop", "limit": 1})).json()["total"]
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            response = await client.post("/runs", json={"job_id": "noop"})
            assert response.status_code == 201, response.text

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = 0
        for status in ("success", "failed", "cancelled"):
            page = await client.get(
                "/runs", params={"job_id": "noop", "status": status, "limit": 1}
            )
            done += page.json()["total"]
        if done >= before + n:
            break
        await asyncio.sleep(0.01)
    return n / (time.perf_counter() - started)


async def api_sync(
    client: httpx.AsyncClient, n: int, concurrency: int
) -> tuple[float, list[float]]:
    """Throughput and per-request latencies (ms) of `async: false` no-op runs."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with sem:
            t0 = time.perf_counter()
            response = await client.post("/runs", json={"job_id": "noop", "async": False})
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.json()["status"] == "success", response.text

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started), latencies


async def fanout(server: Server, followers: int, lines: int) -> dict[str, Any]:
    """`followers` SSE clients of one chatty run: lost events, lag p50/p99, peak RSS."""
    limits = httpx.Limits(max_connections=followers + 10, max_keepalive_connections=followers + 10)
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(base_url=server.api, limits=limits, timeout=timeout) as client:
        delay = max(2.0, followers / 250)
        run = (
            await client.post("/runs", json={"job_id": "chatty", "args": {"delay": delay}})
        ).json()
        lags: list[float] = []
        counts: list[int] = []
        connected = 0

        reconnects = 0

        async def follow() -> None:
            # A real client: when the server cuts a slow subscriber off, resume from the
            # last id seen. "Lost" counts events that never arrived despite that.
            nonlocal connected, reconnects
            got, last_id, first = 0, None, True
            path = f"/runs/{run['run_id']}/events"
            while True:
                headers = {} if last_id is None else {"Last-Event-ID": last_id}
                async with client.stream("GET", path, headers=headers) as response:
                    if first:
                        connected += 1
                        first = False
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line.startswith("data: ") and '"run.output"' in line:
                            now = time.time()
                            got += 1
                            stamp = line[line.index('"timestamp":"') + 13 :].split('"', 1)[0]
                            sent = datetime.fromisoformat(stamp).timestamp()
                            lags.append((now - sent) * 1000)
                        elif line.startswith("data: ") and '"run.finished"' in line:
                            counts.append(got)
                            return
                reconnects += 1

        peak = server.rss_mb()
        tasks = [asyncio.create_task(follow()) for _ in range(followers)]
        while not all(t.done() for t in tasks):
            peak = max(peak, server.rss_mb())
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)
    return {
        "followers": followers,
        "connected_before_output": connected,
        "events_per_follower": lines,
        "lost": sum(lines - c for c in counts) + (followers - len(counts)) * lines,
        "reconnects": reconnects,
        "lag_p50_ms": pct(lags, 0.5),
        "lag_p99_ms": pct(lags, 0.99),
        "peak_rss_mb": peak,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--sync-runs", type=int, default=200)
    parser.add_argument("--followers", type=int, default=500)
    parser.add_argument("--lines", type=int, default=200)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_jobs(tmp / "jobs", opts.lines)
        server = Server(tmp)
        try:
            idle = server.rss_mb()
            floor = await spawn_floor(opts.runs)
            async with httpx.AsyncClient(base_url=server.api, timeout=60) as client:
                await api_sync(client, 20, 1)  # warm-up
                async_rate = await api_async(client, opts.runs)
                sync_rate_1, sync_lat = await api_sync(client, opts.sync_runs, 1)
                sync_rate_c, _ = await api_sync(client, opts.sync_runs, CONCURRENCY)
            loaded = server.rss_mb()
            fan = await fanout(server, opts.followers, opts.lines)
        finally:
            server.stop()
    results = {
        "cpu_count": os.cpu_count(),
        "spawn_floor_runs_per_s": floor,
        "api_async_runs_per_s": async_rate,
        "api_async_vs_floor": async_rate / floor,
        "api_sync_c1_runs_per_s": sync_rate_1,
        "api_sync_c1_p50_ms": pct(sync_lat, 0.5),
        "api_sync_c1_p99_ms": pct(sync_lat, 0.99),
        f"api_sync_c{CONCURRENCY}_runs_per_s": sync_rate_c,
        "rss_idle_mb": idle,
        "rss_after_runs_mb": loaded,
        "sse": fan,
    }
    print(json.dumps(results, indent=2, default=float))
    print(f"\nmedian sync latency {statistics.median(sync_lat):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
