"""MCP overhead benchmark against a real `flwd serve` process (not run by CI).

    .venv/bin/python bench/mcp.py [--calls 300] [--warmup 30]

A no-op job called as an MCP tool over streamable HTTP (the SDK's own client, one
session, protocol 2025-11-25) against the same job through `POST /api/v1/runs` with
`"async": false` (httpx, one keep-alive connection), one call at a time, alternating the
two in rounds of 50 so that a change in the machine's load hits both alike. Reports p50 and
p99 of each and the p50 difference (target: MCP adds at most 10 ms).

Everything talks to 127.0.0.1 only, and only the server process started here is signalled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# This script is named like the SDK's package: run as a script, its own directory comes
# first on sys.path and would shadow `mcp`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
from mcp import Client  # noqa: E402

ROUND = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    jobs = tmp / "jobs" / "noop"
    jobs.mkdir(parents=True)
    (jobs / "config.yaml").write_text(json.dumps({"command": "true"}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "flwd", "serve", "--port", str(port)]
    argv += ["--jobs", f"local-fs={tmp / 'jobs'}", "--data-dir", str(tmp / "data")]
    log = (tmp / "server.log").open("ab")
    # the `disabled` profile: both paths measured would pay the same token check, and
    # neither needs one here (the server listens on loopback only)
    env = {**os.environ, "FLWD_PROFILE": "disabled"}
    proc = subprocess.Popen(argv, cwd=tmp, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    raise SystemExit(f"server did not start: {(tmp / 'server.log').read_text()}")


async def measure(url: str, calls: int, warmup: int) -> tuple[list[float], list[float]]:
    rest: list[float] = []
    tool: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url + "/api/v1", timeout=60) as http,
        Client(url + "/mcp", mode="legacy", read_timeout_seconds=60) as mcp,
    ):

        async def one_rest() -> float:
            started = time.perf_counter()
            response = await http.post("/runs", json={"job_id": "noop", "async": False})
            elapsed = time.perf_counter() - started
            assert response.status_code == 201 and response.json()["status"] == "success"
            return elapsed

        async def one_tool() -> float:
            started = time.perf_counter()
            result = await mcp.call_tool("noop", {})
            elapsed = time.perf_counter() - started
            assert not result.is_error and result.structured_content is not None
            return elapsed

        for _ in range(warmup):
            await one_rest()
            await one_tool()
        done = 0
        while done < calls:
            batch = min(ROUND, calls - done)
            rest += [await one_rest() for _ in range(batch)]
            tool += [await one_tool() for _ in range(batch)]
            done += batch
    return rest, tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flwd-bench-mcp-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            rest, tool = asyncio.run(measure(url, options.calls, options.warmup))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    ms = 1000
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"calls each: {options.calls} (after {options.warmup} warm-up), load average {load}")
    for label, values in (("POST /runs async:false", rest), ("MCP tools/call", tool)):
        p50, p99 = pct(values, 0.5) * ms, pct(values, 0.99) * ms
        print(f"{label:<24}p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    added = (pct(tool, 0.5) - pct(rest, 0.5)) * ms
    print(f"{'MCP adds (p50)':<24}{added:+.1f} ms (target <= 10 ms)")


if __name__ == "__main__":
    main()
