"""What the security extension's per-request work costs (not run by CI).

    .venv/bin/python bench/security.py [--seconds 5] [--rounds 3] [--connections 8]

Starts three real `flwd serve` processes on 127.0.0.1 over the same jobs: one with
`--disable-extension security` (no identification, the hooks' defaults), one with the
extension under its `disabled` profile (no token asked for, no rate limit: its audit and
step hooks still run), and one under the `permissive` profile with a valid token sent on
every request (token hashed and looked up in the one-second cache, request counted by the
rate limiter, headers added). The target's measure is the third against the second:
what checking tokens and rate limits costs; against the first, the whole extension.
All three are measured in rounds (the order reversed each round), twice:

1. `GET /api/v1/jobs/noop`, the cheapest request there is, as fast as they answer it to
   the same keep-alive client (raw HTTP/1.1 on asyncio streams, so the client costs
   little of the two cores): requests per second and the server's CPU time per request;
2. the no-op API runs of `bench/api.py` (`POST /runs` of a `true` job, `async: true`,
   16 at a time, until every run has finished, watched on the job's event stream), the
   throughput the target is stated against: runs per second and the server's CPU per run.

Reported: the medians of each (user + system CPU of every thread, from psutil). The CPU
figures are the ones to trust on a shared machine, where other processes make requests
per second vary by tens of percent between rounds. The target (issue 11, point 11):
under 5 % of the no-op throughput.

The rate limit is raised for the run (a profile `bench` in a temporary profiles dir,
`permissive` with 10^9 requests per minute) so the limiter counts without refusing.
Only processes started here are signalled, by their PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import LeanClient, api_async  # bench/api.py, beside this script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, root: Path, name: str, *flwd_args: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.data = root / f"data-{name}"
        argv = [sys.executable, "-m", "flwd", *flwd_args, "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={root / 'jobs'}", "--data-dir", str(self.data)]
        self.log = (root / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=root, env={**os.environ, **env}, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} server exited: see {root / (name + '.log')}")
            try:
                url = f"http://127.0.0.1:{self.port}/api/v1/health"
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit(f"{name} server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def measure(
    server: Server, token: str | None, seconds: float, connections: int
) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request) of one round."""
    process = psutil.Process(server.proc.pid)
    before = process.cpu_times()
    rps, count = asyncio.run(hammer(server.port, token, seconds, connections))
    after = process.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    return rps, cpu / count * 1e6


async def hammer(
    port: int, token: str | None, seconds: float, connections: int
) -> tuple[float, int]:
    """Requests per second answered 200 by `port` over `connections` keep-alive
    connections during `seconds`, and how many."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (
        f"GET /api/v1/jobs/noop HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        "Accept: application/json\r\n\r\n"
    ).encode()
    done = 0
    stop_at = time.monotonic() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if status != b"200":
                    raise SystemExit(f"answered {status!r}: {head!r}")
                done += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return done / (time.monotonic() - started), done


def measure_runs(server: Server, token: str | None, runs: int) -> tuple[float, float]:
    """(no-op runs per second, server CPU milliseconds per run) of one round."""
    process = psutil.Process(server.proc.pid)

    async def go() -> float:
        client = LeanClient(server.port, token)
        try:
            return await api_async(client, runs)
        finally:
            client.close()

    before = process.cpu_times()
    rate = asyncio.run(go())
    after = process.cpu_times()
    return rate, ((after.user + after.system) - (before.user + before.system)) / runs * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=400, help="no-op runs per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-security-") as tmp:
        root = Path(tmp)
        (root / "jobs" / "noop").mkdir(parents=True)
        (root / "jobs" / "noop" / "config.yaml").write_text(json.dumps({"command": "true"}))
        (root / "profiles").mkdir()
        (root / "profiles" / "bench.yaml").write_text(
            "name: bench\nauth: {required: true}\n"
            "rate_limit: {per_token: 1000000000/minute, anonymous: 1000000000/minute}\n"
        )
        profiles = {"FLWD_PROFILES_DIR": str(root / "profiles")}
        servers = {
            "off": Server(root, "off", "--disable-extension", "security", env={}),
            "disabled": Server(root, "disabled", env={**profiles, "FLWD_PROFILE": "disabled"}),
            "secured": Server(root, "secured", env={**profiles, "FLWD_PROFILE": "bench"}),
        }
        try:
            tokens = {
                "off": None,
                "disabled": None,
                "secured": (servers["secured"].data / "admin-token").read_text().strip(),
            }
            rps: dict[str, list[float]] = {name: [] for name in servers}
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            runs_per_s: dict[str, list[float]] = {name: [] for name in servers}
            run_cpu: dict[str, list[float]] = {name: [] for name in servers}
            order = list(servers)
            for name in order:  # warm up
                measure(servers[name], tokens[name], 1.0, args.connections)
                measure_runs(servers[name], tokens[name], 50)
            for _ in range(args.rounds):
                for name in order:
                    speed, micros = measure(
                        servers[name], tokens[name], args.seconds, args.connections
                    )
                    rps[name].append(speed)
                    cpu[name].append(micros)
                for name in order:
                    rate, millis = measure_runs(servers[name], tokens[name], args.runs)
                    runs_per_s[name].append(rate)
                    run_cpu[name].append(millis)
                order.reverse()
        finally:
            for server in servers.values():
                server.stop()

    def median(values: dict[str, list[float]], name: str) -> float:
        return statistics.median(values[name])

    def cost(values: dict[str, list[float]], base: str, more: bool) -> float:
        """How much worse `secured` is than `base`, in percent (`more`: higher is worse)."""
        b, s = median(values, base), median(values, "secured")
        return round(((s - b) if more else (b - s)) / b * 100, 1)

    print(
        json.dumps(
            {
                "noop_runs": {
                    "runs_per_s_rounds": {
                        k: [round(v) for v in vals] for k, vals in runs_per_s.items()
                    },
                    "cpu_ms_per_run_rounds": {
                        k: [round(v, 2) for v in vals] for k, vals in run_cpu.items()
                    },
                    "medians": {
                        k: {
                            "runs_per_s": round(median(runs_per_s, k)),
                            "cpu_ms": round(median(run_cpu, k), 2),
                        }
                        for k in runs_per_s
                    },
                    # the target's measure: tokens and rate limits, the extension loaded
                    # either way (its `disabled` profile checks neither)
                    "tokens_and_rate_limit_cost_percent_cpu": cost(run_cpu, "disabled", True),
                    "tokens_and_rate_limit_cost_percent_runs_per_s": cost(
                        runs_per_s, "disabled", False
                    ),
                    # the whole extension (also its audit and step hooks) against none
                    "extension_cost_percent_cpu": cost(run_cpu, "off", True),
                    "extension_cost_percent_runs_per_s": cost(runs_per_s, "off", False),
                },
                "get_job": {
                    "rps_rounds": {k: [round(v) for v in vals] for k, vals in rps.items()},
                    "cpu_us_per_request_rounds": {
                        k: [round(v) for v in vals] for k, vals in cpu.items()
                    },
                    "medians": {
                        k: {"rps": round(median(rps, k)), "cpu_us": round(median(cpu, k))}
                        for k in rps
                    },
                    "tokens_and_rate_limit_cost_percent_cpu": cost(cpu, "disabled", True),
                    "extension_cost_percent_cpu": cost(cpu, "off", True),
                },
                "target_percent": 5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
