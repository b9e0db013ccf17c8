"""Streaming clients that do not read, against a real `flwd serve` (not run by CI).

    .venv/bin/python bench/streams.py                       # both drills
    .venv/bin/python bench/streams.py --only replay --replays 60 --log-mb 10
    .venv/bin/python bench/streams.py --only subscribers --subscribers 300 --run-mb 25

1. **replay**: one finished run with `--log-mb` of output (100-byte lines); then
   `--replays` clients ask for its replay (spread over SSE `logs?follow=true`, JSON
   `/logs`, `/runs/{id}/events` and `/events/runs?since=0`, or one kind with `--kind`)
   and never read. Reports the server's RSS before, at its peak while they hang and after
   they are gone, kernel TCP memory (`/proc/net/sockstat`, this network namespace), how
   many of the connections the server still holds, and `/health` latency p50/p99 sampled
   every 20 ms while they hang.
2. **subscribers**: `--runs` runs printing `--run-mb` each (999-byte lines), started
   together, first with no one watching, then with `--subscribers` clients on
   `/events/runs` that never read. Reports the wall time of the runs each way (the
   slowdown factor), the server's peak RSS, peak kernel TCP memory, and how long the
   server kept the subscribers connected.

Everything talks to 127.0.0.1 only, and only the server process started here is signalled.
To measure another checkout, put it first on PYTHONPATH (the server is `python -m flwd`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

KINDS = ("logs-follow", "logs-json", "run-events", "events-since-0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def tcp_mem_mb() -> float:
    """Kernel memory of all TCP sockets in this network namespace (pages of 4 KiB)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * 4096 / 2**20
    return float("nan")


class Server:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        argv = [sys.executable, "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={tmp / 'jobs'}", "--data-dir", str(tmp / "data")]
        full_env = {**os.environ, "FLWD_KILL_GRACE": "1s", **env}
        self.log = (tmp / "server.log").open("wb")
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self.log, stderr=self.log, cwd=tmp)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.api + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit("server did not become healthy; see server.log")
        self.ps = psutil.Process(self.proc.pid)
        self.http = httpx.Client(base_url=self.api, timeout=60)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def held(self, socks: list[socket.socket]) -> int:
        """How many of these client sockets the server still holds connected."""
        ports = {sock.getsockname()[1] for sock in socks}
        return sum(
            1
            for c in self.ps.net_connections("tcp")
            if c.laddr
            and c.laddr.port == self.port
            and c.raddr
            and c.raddr.port in ports
            and c.status == psutil.CONN_ESTABLISHED
        )

    def run(self, job_id: str) -> str:
        run_id: str = self.http.post("/runs", json={"job_id": job_id}).json()["run_id"]
        return run_id

    def wait(self, run_ids: list[str], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for run_id in run_ids:
            while self.http.get(f"/runs/{run_id}").json()["status"] not in (
                "success",
                "failed",
                "cancelled",
            ):
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run_id} did not finish")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def stalled(port: int, path: str) -> socket.socket:
    """A client that sends its request and then never reads."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /api/v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def peek(sock: socket.socket) -> bool:
    """Whether the server has sent anything yet (without taking it from the socket)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


class Sampler(threading.Thread):
    """Samples server RSS, kernel TCP memory and `/health` latency until stopped."""

    def __init__(self, server: Server, health: bool) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.health = health
        self.rss: list[float] = []
        self.tcp: list[float] = []
        self.latencies: list[float] = []
        self.stamps: list[float] = []
        self.failures = 0
        self.started = time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.api, timeout=5) as http:
            while not self.done.is_set():
                self.rss.append(self.server.rss_mb())
                self.tcp.append(tcp_mem_mb())
                if self.health:
                    start = time.perf_counter()
                    try:
                        http.get("/health").raise_for_status()
                        self.latencies.append((time.perf_counter() - start) * 1000)
                        self.stamps.append(time.monotonic() - self.started)
                    except httpx.HTTPError:
                        self.failures += 1
                self.done.wait(0.02)


def drill_replay(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    jobs = tmp / "jobs"
    size = int(args.log_mb * 1_000_000)
    (jobs / "biglog").mkdir(parents=True)
    command = f"head -c {size} /dev/zero | tr '\\0' x | fold -w 99"
    (jobs / "biglog" / "config.yaml").write_text(json.dumps({"command": command}))
    env = {"FLWD_OUTPUT_HEAD_BYTES": str(size * 2), **args.env}
    server = Server(tmp, env)
    try:
        run_id = server.run("biglog")
        server.wait([run_id])
        paths = {
            "logs-follow": f"/runs/{run_id}/logs?follow=true",
            "logs-json": f"/runs/{run_id}/logs",
            "run-events": f"/runs/{run_id}/events",
            "events-since-0": "/events/runs?since=0",
        }
        kinds = [args.kind] if args.kind else list(KINDS)
        time.sleep(1)
        rss_before, tcp_before = server.rss_mb(), tcp_mem_mb()
        cpu_before = server.cpu_s()
        sampler = Sampler(server, health=True)
        sampler.start()
        socks = [stalled(server.port, paths[kinds[i % len(kinds)]]) for i in range(args.replays)]
        start = time.monotonic()
        held_at: list[tuple[float, int]] = []
        while time.monotonic() - start < args.hold:
            held_at.append((time.monotonic() - start, server.held(socks)))
            time.sleep(0.5)
        sampler.done.set()
        sampler.join()
        cpu_used = server.cpu_s() - cpu_before
        for sock in socks:
            sock.close()
        time.sleep(2)
        return {
            "log_mb": args.log_mb,
            "connections": args.replays,
            "kinds": kinds,
            "hold_s": args.hold,
            "rss_before_mb": round(rss_before, 1),
            "rss_peak_mb": round(max(sampler.rss), 1),
            "rss_added_mb": round(max(sampler.rss) - rss_before, 1),
            "rss_after_mb": round(server.rss_mb(), 1),
            "tcp_mem_before_mb": round(tcp_before, 1),
            "tcp_mem_peak_mb": round(max(sampler.tcp), 1),
            "health_p50_ms": round(pct(sampler.latencies, 0.5), 1),
            "health_p99_ms": round(pct(sampler.latencies, 0.99), 1),
            "health_max_ms": round(max(sampler.latencies, default=float("nan")), 1),
            "health_failures": sampler.failures,
            "health_worst_ms_at_s": sorted(
                (
                    (round(ms), round(t, 1))
                    for ms, t in zip(sampler.latencies, sampler.stamps, strict=True)
                ),
                reverse=True,
            )[:6],
            "server_cpu_s": round(cpu_used, 2),
            "held_connections": [
                (round(t, 1), n) for t, n in held_at[:: max(1, len(held_at) // 8)]
            ],
        }
    finally:
        server.stop()


def drill_subscribers(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    jobs = tmp / "jobs"
    size = int(args.run_mb * 1_000_000)
    (jobs / "flood").mkdir(parents=True)
    command = f"head -c {size} /dev/zero | tr '\\0' x | fold -w 999"
    (jobs / "flood" / "config.yaml").write_text(json.dumps({"command": command}))
    env = {"FLWD_OUTPUT_HEAD_BYTES": str(size * 2), **args.env}
    server = Server(tmp, env)
    try:
        # warm-up, then the runs with no one watching
        server.wait([server.run("flood")])
        start = time.monotonic()
        server.wait([server.run("flood") for _ in range(args.runs)])
        alone = time.monotonic() - start
        rss_before, tcp_before = server.rss_mb(), tcp_mem_mb()
        socks = [stalled(server.port, "/events/runs") for _ in range(args.subscribers)]
        deadline = time.monotonic() + 60
        waiting = list(socks)
        while waiting and time.monotonic() < deadline:
            # streaming once its headers came: peeked at, so the client still reads nothing
            waiting = [sock for sock in waiting if not peek(sock)]
            time.sleep(0.1)
        subscribed = len(socks) - len(waiting)
        rss_subscribed = server.rss_mb()
        sampler = Sampler(server, health=False)
        sampler.start()
        start = time.monotonic()
        server.wait([server.run("flood") for _ in range(args.runs)])
        watched = time.monotonic() - start
        held_after_runs = server.held(socks)
        while server.held(socks) > 0 and time.monotonic() - start < watched + 60:
            time.sleep(0.1)
        all_gone = time.monotonic() - start
        sampler.done.set()
        sampler.join()
        for sock in socks:
            sock.close()
        return {
            "run_mb": args.run_mb,
            "runs": args.runs,
            "subscribers": args.subscribers,
            "subscribed": subscribed,
            "runs_alone_s": round(alone, 2),
            "runs_watched_s": round(watched, 2),
            "slowdown": round(watched / alone, 2),
            "rss_before_mb": round(rss_before, 1),
            "rss_subscribed_mb": round(rss_subscribed, 1),
            "rss_peak_mb": round(max(sampler.rss), 1),
            "rss_timeline_mb": [round(x) for x in sampler.rss[:: max(1, len(sampler.rss) // 12)]],
            "tcp_mem_before_mb": round(tcp_before, 1),
            "tcp_mem_peak_mb": round(max(sampler.tcp), 1),
            "held_when_runs_ended": held_after_runs,
            "all_cut_after_s": round(all_gone, 1),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("replay", "subscribers"))
    parser.add_argument("--replays", type=int, default=60)
    parser.add_argument("--log-mb", type=float, default=10.5)
    parser.add_argument("--kind", choices=KINDS, help="only this kind of replay")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the replays hang")
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--run-mb", type=float, default=25.0)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="server setting"
    )
    args = parser.parse_args()
    args.env = dict(item.split("=", 1) for item in args.env)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[str, Any] = {}
    for drill, function in (("replay", drill_replay), ("subscribers", drill_subscribers)):
        if args.only in (None, drill):
            with tempfile.TemporaryDirectory(prefix=f"flwd-bench-{drill}-") as tmp:
                results[drill] = function(Path(tmp), args)
            for key, value in results[drill].items():
                print(f"{drill}.{key}: {json.dumps(value)}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
