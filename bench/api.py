"""HTTP API benchmark against a real `flwd serve` process (not run by CI).

    .venv/bin/python bench/api.py [--runs 400] [--followers 500] [--lines 200]

Measures, in one go on this machine:
1. the bare spawn floor: asyncio `create_subprocess_exec` of the same no-op script with
   `start_new_session=True`, at the same concurrency as the API runs;
2. no-op runs created through the API per second, `async: true` (until all are
   terminal) and `async: false` (round trip latency p50/p99 and throughput, once the
   server is idle again after the `async: true` rounds, beside the p50 of the same
   script spawned bare one at a time), with a lean HTTP client
   (`LeanClient`) whose own CPU per run is reported beside the server's;
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
import re
import signal
import socket
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
ROUNDS = 4


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


#: the `permissive` profile without its rate limits: tokens checked on every request,
#: steps not sandboxed (the floors of the one-contract issue are measured under it)
BENCH_PROFILE = """name: bench
description: permissive without rate limits, for benchmarks
auth: {required: true}
rate_limit: {per_token: null, anonymous: null}
steps: {on_unavailable: warn}
"""


class Server:
    def __init__(self, tmp: Path, profile: str = "bench") -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        argv = [sys.executable, "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={tmp / 'jobs'}", "--data-dir", str(tmp / "data")]
        # --followers may pass the default stream cap (512); the caps are not measured here.
        env = {**os.environ, "FLWD_MAX_QUEUE": "100000", "FLWD_KILL_GRACE": "1s"}
        env["FLWD_MAX_STREAMS"] = "100000"
        (tmp / "profiles").mkdir(exist_ok=True)
        (tmp / "profiles" / "bench.yaml").write_text(BENCH_PROFILE)
        env["FLWD_PROFILE"] = profile
        env["FLWD_PROFILES_DIR"] = str(tmp / "profiles")
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
        # the admin token the security extension wrote on first start (none without it)
        token_file = tmp / "data" / "admin-token"
        self.token = token_file.read_text().strip() if token_file.is_file() else None
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    async def settled(self, window: float = 0.25, limit: float = 15.0) -> float:
        """Wait until the server is idle (under 5 % of a core over `window` seconds):
        after a burst of runs it still deletes their rooms and checkpoints its WAL, work
        a latency figure should not include. The seconds waited (at most `limit`)."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            before = self.cpu_s()
            await asyncio.sleep(window)
            if self.cpu_s() - before < 0.05 * window:
                break
        return time.monotonic() - started

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


def profile(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `out` (collapsed stacks) until it gets SIGINT."""
    argv = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", out, "-p", str(pid)]
    return subprocess.Popen(argv)


async def bare_noop() -> None:
    """Spawn the no-op script ourselves, in its own session, and read its output."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        NOOP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await proc.communicate()


async def spawn_floor(n: int) -> float:
    """Runs/s of spawning the no-op script ourselves, output read, own session."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            await bare_noop()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


class LeanClient:
    """A lean HTTP/1.1 client for the run benchmarks: `CONCURRENCY` keep-alive connections
    on raw asyncio streams, requests written as prepared bytes, responses read by their
    `Content-Length`.

    httpx cost this process 3.8 ms of CPU per `POST /runs` on this machine, more than the
    server's whole run (4.3 ms); on two cores shared with the server and the floor's
    spawns, the ratio then measured the client as much as the server. This one costs
    about a tenth of that (`client_cpu_ms_per_run` in the results)."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        head = (
            f"POST /api/v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        request = head.encode() + data
        while self.idle:
            reader, writer = self.idle.pop()
            writer.write(request)
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionResetError):
                # the server closed it while it was idle (its keep-alive timeout)
                writer.close()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(request)
            raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        answer = json.loads(await reader.readexactly(length))
        self.idle.append((reader, writer))
        return status, answer

    async def stream(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An SSE response's connection, its head read (the body is chunked)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            f"GET /api/v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\n{self.auth}\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return reader, writer

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


_FINISHED = re.compile(rb'event: run\.finished\ndata: \{[^\n]*?"run_id":"([^"]+)"')


async def spawn_latencies(n: int) -> list[float]:
    """Milliseconds of each of `n` bare spawns of the no-op script one after the other
    (the `async: false` latency's floor on this machine at this moment)."""
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await bare_noop()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def api_async(client: LeanClient, n: int) -> float:
    """Runs/s from the first POST until every run is terminal.

    Completion is watched the way a client would, on the live event stream of the job
    (one subscriber), not by polling run counts: three `COUNT(*)` list requests every
    10 ms competed with the runs for the server's event loop."""
    finished: set[str] = set()
    all_done = asyncio.Event()
    created: set[str] = set()
    reader, writer = await client.stream("/events/runs?job_id=noop")

    async def watch() -> None:
        tail = b""  # a frame cut by a read (chunk sizes are skipped by the pattern)
        while True:
            data = await reader.read(262144)
            if not data:
                return
            data = tail + data
            cut = data.rfind(b"\n\n")
            tail = data[cut + 2 :] if cut >= 0 else data
            for match in _FINISHED.finditer(data, 0, max(cut, 0)):
                finished.add(match.group(1).decode())
            if len(created) == n and created <= finished:
                all_done.set()
                return

    watcher = asyncio.create_task(watch())
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with sem:
            status, run = await client.post("/runs", {"job_id": "noop"})
            assert status == 201, run
            created.add(run["run_id"])

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    if created <= finished:
        all_done.set()
    async with asyncio.timeout(120):
        await all_done.wait()
    elapsed = time.perf_counter() - started
    watcher.cancel()
    writer.close()
    return n / elapsed


async def api_sync(client: LeanClient, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Throughput and per-request latencies (ms) of `async: false` no-op runs."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with sem:
            t0 = time.perf_counter()
            status, run = await client.post("/runs", {"job_id": "noop", "async": False})
            latencies.append((time.perf_counter() - t0) * 1000)
            assert status in (200, 201) and run["status"] == "success", run

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started), latencies


class _Follower:
    """One SSE client on a raw socket: HTTP/1.1 request, chunked decoding, frame split.

    Kept cheap on purpose (500 of them share this process and the machine with the
    server): one read call per arrival, one `time.time()` per read, timestamps parsed once
    per distinct value. Nothing is skipped: every frame's id is checked."""

    def __init__(
        self, port: int, path: str, stamps: dict[bytes, float], token: str | None = None
    ) -> None:
        self.port = port
        self.token = token
        self.path = path
        self.stamps = stamps
        self.ids: list[int] = []  # run.output event ids, in arrival order
        self.lags: list[float] = []
        self.last_id: int | None = None
        self.finished = False
        self.reconnects = 0
        self.duplicates = 0

    async def run(self, deadline: float) -> None:
        while not self.finished:
            if time.monotonic() > deadline:
                raise TimeoutError("follower did not see run.finished in time")
            await self._connect_once()
            if not self.finished:
                self.reconnects += 1

    async def _connect_once(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            resume = "" if self.last_id is None else f"Last-Event-ID: {self.last_id}\r\n"
            auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
            writer.write(
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Accept: text/event-stream\r\n{auth}{resume}\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"chunked" in head.lower(), head
            raw = b""  # undecoded chunked bytes
            body = b""  # decoded bytes not yet split into frames
            while not self.finished:
                data = await reader.read(262144)
                if not data:
                    return
                now = time.time()
                raw += data
                pos = 0
                pieces = [body]
                while True:
                    eol = raw.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    size = int(raw[pos:eol], 16)
                    end = eol + 2 + size
                    if len(raw) < end + 2:
                        break
                    if size == 0:
                        raw, pos = b"", 0
                        break
                    pieces.append(raw[eol + 2 : end])
                    pos = end + 2
                raw = raw[pos:]
                frames = b"".join(pieces).split(b"\n\n")
                body = frames.pop()
                for frame in frames:
                    self._frame(frame, now)
        finally:
            writer.close()

    def _frame(self, frame: bytes, now: float) -> None:
        if not frame.startswith(b"id: "):
            return  # a comment (`: ping`, the retry hint) or a frame without an id
        eol = frame.index(b"\n")
        event_id = int(frame[4:eol])
        if self.last_id is not None and event_id <= self.last_id:
            self.duplicates += 1
            return
        self.last_id = event_id
        if frame.startswith(b"event: run.output\n", eol + 1):
            self.ids.append(event_id)
            at = frame.index(b'"timestamp":"') + 13
            stamp = frame[at : frame.index(b'"', at)]
            sent = self.stamps.get(stamp)
            if sent is None:
                sent = self.stamps[stamp] = datetime.fromisoformat(stamp.decode()).timestamp()
            self.lags.append((now - sent) * 1000)
        elif frame.startswith(b"event: run.finished\n", eol + 1):
            self.finished = True


async def fanout(server: Server, followers: int, lines: int) -> dict[str, Any]:
    """`followers` SSE clients of one chatty run: lost/duplicated events, lag p50/p99,
    peak RSS. Lost = expected output ids (from the JSON logs endpoint) minus received."""
    async with httpx.AsyncClient(base_url=server.api, timeout=60, headers=server.headers) as client:
        delay = max(2.0, followers / 250)
        run = (
            await client.post("/runs", json={"job_id": "chatty", "args": {"delay": delay}})
        ).json()
        path = f"/api/v1/runs/{run['run_id']}/events"
        stamps: dict[bytes, float] = {}
        clients = [_Follower(server.port, path, stamps, server.token) for _ in range(followers)]
        deadline = time.monotonic() + delay + lines / 10 + 120
        peak = server.rss_mb()
        cpu_before = server.cpu_s()
        tasks = [asyncio.create_task(c.run(deadline)) for c in clients]
        while not all(t.done() for t in tasks):
            peak = max(peak, server.rss_mb())
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)
        cpu = server.cpu_s() - cpu_before
        logs = (await client.get(f"/runs/{run['run_id']}/logs")).json()["logs"]
    expected = [line["id"] for line in logs]
    assert len(expected) == lines, f"the run printed {len(expected)} lines, not {lines}"
    lags = [lag for c in clients for lag in c.lags]
    return {
        "followers": followers,
        "events_per_follower": lines,
        "lost": sum(len(set(expected) - set(c.ids)) for c in clients),
        "duplicated": sum(c.duplicates for c in clients),
        "out_of_order_or_extra": sum(c.ids != expected for c in clients),
        "reconnects": sum(c.reconnects for c in clients),
        "lag_p50_ms": pct(lags, 0.5),
        "lag_p99_ms": pct(lags, 0.99),
        "lag_max_ms": max(lags) if lags else float("nan"),
        "peak_rss_mb": peak,
        "server_cpu_s": cpu,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--sync-runs", type=int, default=200)
    parser.add_argument("--followers", type=int, default=500)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--only", choices=("runs", "sse"), help="measure only this part")
    parser.add_argument(
        "--server-profile",
        default="bench",
        help="security profile of the server (default: permissive without rate limits; "
        "'disabled' measures the core without token checks)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="record the server with py-spy (collapsed stacks)"
    )
    opts = parser.parse_args()
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="flwd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_jobs(tmp / "jobs", opts.lines)
        server = Server(tmp, opts.server_profile)
        profiler = profile(server.proc.pid, opts.profile) if opts.profile else None
        try:
            results["rss_idle_mb"] = server.rss_mb()
            if opts.only != "sse":
                results.update(await runs(server, opts.runs, opts.sync_runs))
            if opts.only != "runs":
                results["sse"] = await fanout(server, opts.followers, opts.lines)
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            server.stop()
    print(json.dumps(results, indent=2, default=float))


async def runs(server: Server, n: int, sync_runs: int) -> dict[str, Any]:
    """Floor and API `async: true` alternate in ROUNDS rounds of n/ROUNDS runs each, so
    load from anything else on the machine hits both alike; then `async: false`."""
    per_round = max(1, n // ROUNDS)
    floor_s = api_s = api_cpu = client_cpu = 0.0
    ratios: list[float] = []
    client = LeanClient(server.port, server.token)
    try:
        await api_sync(client, 20, 1)  # warm-up
        for _ in range(ROUNDS):
            floor_rate = await spawn_floor(per_round)
            cpu_before, own_before = server.cpu_s(), time.process_time()
            api_rate = await api_async(client, per_round)
            api_cpu += server.cpu_s() - cpu_before
            client_cpu += time.process_time() - own_before
            floor_s += per_round / floor_rate
            api_s += per_round / api_rate
            ratios.append(api_rate / floor_rate)
        settled = await server.settled()
        bare = await spawn_latencies(sync_runs // 2)
        cpu_before = server.cpu_s()
        sync_rate_1, sync_lat = await api_sync(client, sync_runs, 1)
        sync_cpu = server.cpu_s() - cpu_before
        bare += await spawn_latencies(sync_runs // 2)
        sync_rate_c, _ = await api_sync(client, sync_runs, CONCURRENCY)
    finally:
        client.close()
    return {
        "spawn_floor_runs_per_s": per_round * ROUNDS / floor_s,
        "api_async_runs_per_s": per_round * ROUNDS / api_s,
        "api_async_vs_floor": floor_s / api_s,
        "api_async_vs_floor_per_round": [round(r, 3) for r in ratios],
        # the server's CPU (every thread, user + system) per run while they ran; rooms
        # still being deleted in the background when a round ends count in the next one
        "api_async_server_cpu_ms_per_run": api_cpu * 1000 / (per_round * ROUNDS),
        "client_cpu_ms_per_run": client_cpu * 1000 / (per_round * ROUNDS),
        "api_sync_settled_after_s": settled,
        "api_sync_c1_server_cpu_ms_per_run": sync_cpu * 1000 / sync_runs,
        "api_sync_c1_runs_per_s": sync_rate_1,
        "api_sync_c1_p50_ms": pct(sync_lat, 0.5),
        "api_sync_c1_p99_ms": pct(sync_lat, 0.99),
        # the same no-op script spawned bare, one at a time, before and after
        "spawn_c1_p50_ms": pct(bare, 0.5),
        f"api_sync_c{CONCURRENCY}_runs_per_s": sync_rate_c,
        "rss_after_runs_mb": server.rss_mb(),
    }


if __name__ == "__main__":
    asyncio.run(main())
