"""What the security extension's per-request work costs (not run by CI).

    .venv/bin/python bench/security.py [--seconds 5] [--rounds 3] [--connections 8]

Starts two real `flwd serve` processes on 127.0.0.1 over the same jobs: one with
`--disable-extension security` (no identification, the hooks' defaults) and one under
the `permissive` profile with a valid token sent on every request (token hashed and
looked up in the one-second cache, request counted by the rate limiter, headers added).
Both answer `GET /api/v1/jobs/noop` as fast as they can to the same keep-alive client
(raw HTTP/1.1 on asyncio streams, so the client costs little of the two cores), in
alternating rounds; the medians of requests per second are compared. The target
(issue 11, point 11): under 5 % of the no-op throughput.

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


async def hammer(port: int, token: str | None, seconds: float, connections: int) -> float:
    """Requests per second answered 200 by `port` over `connections` keep-alive
    connections during `seconds`."""
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
    return done / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
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
        plain = Server(root, "disabled", "--disable-extension", "security", env={})
        secured = Server(
            root,
            "secured",
            env={"FLWD_PROFILE": "bench", "FLWD_PROFILES_DIR": str(root / "profiles")},
        )
        try:
            token = (secured.data / "admin-token").read_text().strip()
            results: dict[str, list[float]] = {"disabled": [], "secured": []}
            asyncio.run(hammer(plain.port, None, 1.0, args.connections))  # warm up
            asyncio.run(hammer(secured.port, token, 1.0, args.connections))
            for _ in range(args.rounds):
                results["disabled"].append(
                    asyncio.run(hammer(plain.port, None, args.seconds, args.connections))
                )
                results["secured"].append(
                    asyncio.run(hammer(secured.port, token, args.seconds, args.connections))
                )
        finally:
            plain.stop()
            secured.stop()
    base = statistics.median(results["disabled"])
    with_security = statistics.median(results["secured"])
    cost = (base - with_security) / base * 100
    print(
        json.dumps(
            {
                "rounds": {k: [round(v) for v in vals] for k, vals in results.items()},
                "disabled_rps": round(base),
                "security_rps": round(with_security),
                "cost_percent": round(cost, 1),
                "target_percent": 5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
