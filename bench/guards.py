"""Cost of the request guards (not run by CI): small requests per second against two
checkouts of flwd, alternating, on the same machine.

    .venv/bin/python bench/guards.py --baseline /work/main [--rounds 4] [--requests 4000]
    .venv/bin/python bench/guards.py --micro     # CPU per request of the guards, in-process

Each checkout's own `.venv/bin/python -m flwd serve` is started on a free loopback port
with a temp data dir and no jobs; 16 keep-alive connections (raw sockets, one request in
flight each) send `GET /api/v1/health`, then `POST /api/v1/runs` for a job that does not
exist (a JSON body read, checked and decoded, answered 404). Only the servers started here
are signalled, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CONCURRENCY = 16
HERE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, checkout: Path, tmp: Path) -> None:
        self.port = free_port()
        (tmp / "jobs").mkdir()
        python = checkout / ".venv" / "bin" / "python"
        argv = [str(python), "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={tmp / 'jobs'}", "--data-dir", str(tmp / "data")]
        self.log = (tmp / "server.log").open("wb")
        self.proc = subprocess.Popen(argv, cwd=tmp, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/api/v1/health"
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{checkout}: flwd serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def rate(port: int, request: bytes, total: int) -> float:
    """Requests per second over CONCURRENCY keep-alive connections."""
    per_connection = total // CONCURRENCY

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_connection):
            await _exchange(reader, writer, request)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return per_connection * CONCURRENCY / (time.perf_counter() - started)


GET = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
BODY = b'{"job_id": "missing/job", "args": {"a": [1, 2, {"b": "c"}]}}'
POST = (
    b"POST /api/v1/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


def micro(count: int = 20000) -> None:
    """CPU per request of the guards alone, in-process: the ASGI middleware around an app
    that answers at once, and the protocol wrapper around a protocol that does nothing."""
    from flwd.api.connections import ConnectionBook, GuardedConnection
    from flwd.api.guards import RequestGuards
    from flwd.settings import Settings

    guards = RequestGuards(Settings())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def send(message: Any) -> None:
        return None

    def scope_of(method: str, body: bool) -> Any:
        headers = [(b"host", b"localhost:8080"), (b"accept", b"*/*")]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", b"60")]
        return {
            "type": "http",
            "method": method,
            "path": "/api/v1/runs",
            "headers": headers,
            "query_string": b"",
            "client": ("127.0.0.1", 1),
        }

    async def guarded(method: str, body: bool) -> float:
        async def receive() -> Any:
            return {"type": "http.request", "body": BODY, "more_body": False}

        started = time.perf_counter()
        for _ in range(count):
            await guards.handle(scope_of(method, body), receive, send, app)
        return (time.perf_counter() - started) / count * 1e6

    async def bare(method: str, body: bool) -> float:
        async def receive() -> Any:
            return {"type": "http.request", "body": BODY, "more_body": False}

        started = time.perf_counter()
        for _ in range(count):
            scope_of(method, body)
            await app(None, receive, send)
        return (time.perf_counter() - started) / count * 1e6

    for method, body in (("GET", False), ("POST", True)):
        cost = min(
            asyncio.run(guarded(method, body)) - asyncio.run(bare(method, body)) for _ in range(3)
        )
        print(f"ASGI guards, {method}: {cost:.1f} µs per request")

    class Nothing(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            return None

    async def wrapped() -> float:
        book = ConnectionBook(max_connections=256, max_streams=512, header_timeout=10)
        connection = GuardedConnection(book, Nothing())
        transport = asyncio.Transport()
        connection.connection_made(transport)
        started = time.perf_counter()
        for _ in range(count):
            connection.data_received(GET)
            connection.request_finished()
        elapsed = (time.perf_counter() - started) / count * 1e6
        connection.connection_lost(None)
        return elapsed

    print(f"protocol wrapper: {min(asyncio.run(wrapped()) for _ in range(3)):.1f} µs per request")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, help="checkout to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--micro", action="store_true", help="in-process cost of the guards")
    args = parser.parse_args()
    if args.micro or args.baseline is None:
        micro()
        return
    sides = {"baseline": args.baseline.resolve(), "this": HERE}
    results: dict[str, dict[str, list[float]]] = {s: {"GET": [], "POST": []} for s in sides}
    print(f"load average before: {os.getloadavg()}")
    for round_ in range(args.rounds):
        order = list(sides.items()) if round_ % 2 == 0 else list(sides.items())[::-1]
        for side, checkout in order:
            with tempfile.TemporaryDirectory() as tmp:
                server = Server(checkout, Path(tmp))
                try:
                    asyncio.run(rate(server.port, GET, 800))  # warm up
                    for name, request in (("GET", GET), ("POST", POST)):
                        value = asyncio.run(rate(server.port, request, args.requests))
                        results[side][name].append(value)
                finally:
                    server.stop()
    print(f"load average after: {os.getloadavg()}")
    for side, by_name in results.items():
        for name, values in by_name.items():
            shown = ", ".join(f"{v:,.0f}" for v in values)
            print(f"{side:8} {name:4} requests/s per round: {shown}")


if __name__ == "__main__":
    main()
