"""End-to-end fixtures: a real `flwd serve` process on a free loopback port, with a temp
data dir and a temp jobs dir of small fast jobs. Fixtures are prefixed `api_`.

Only processes these fixtures start are ever signalled, by their PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
#: a raw MCP `initialize` request (protocol 2025-11-25) for `POST /mcp`, and its headers
MCP_INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}

JOBS: dict[str, dict[str, Any]] = {
    "hello": {
        "description": "Say hello and return a result",
        "version": "1.0.0",
        "args": {
            "type": "object",
            "properties": {"name": {"type": "string", "default": "world"}},
            "additionalProperties": False,
        },
        "command": 'echo "hello $FLWD_ARG_NAME"; '
        'printf \'{"greeting": "hello %s"}\' "$FLWD_ARG_NAME" > "$FLWD_RESULT_FILE"',
    },
    "demo/ticker": {
        "description": "Print COUNT numbered lines, one every INTERVAL seconds",
        "args": {
            "type": "object",
            "properties": {
                "count": {"type": "integer", "default": 5},
                "interval": {"type": "number", "default": 0.05},
            },
        },
        "command": 'i=1; while [ "$i" -le "$FLWD_ARG_COUNT" ]; do echo "tick $i"; '
        'i=$((i+1)); sleep "$FLWD_ARG_INTERVAL"; done',
    },
    "demo/sleeper": {"description": "Sleep for a minute", "command": "echo sleeping; sleep 60"},
    "report": {
        "description": "Write a CSV artifact",
        "command": 'printf "a,b\\n1,2\\n" > "$FLWD_ARTIFACTS_DIR/report.csv"; echo written',
    },
    "noop": {"description": "Do nothing", "command": "true"},
    "needs-target": {
        "args": {
            "type": "object",
            "properties": {"target": {"type": "string"}},
            "required": ["target"],
        },
        "command": "echo $FLWD_ARG_TARGET",
    },
}


def write_jobs(root: Path) -> None:
    """The test jobs as folders with a `config.yaml` (JSON is valid YAML)."""
    for job_id, config in JOBS.items():
        folder = root / job_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps(config))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One `flwd serve` child process that can be stopped and started again on the same
    port and data dir (to test resuming across a restart)."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.jobs = tmp / "jobs"
        self.data = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"
        self.env = {**os.environ, "FLWD_KILL_GRACE": "1s", "FLWD_HEARTBEAT": "1s", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "server.log"
        if not self.jobs.exists():
            write_jobs(self.jobs)

    def start(self) -> None:
        argv = [sys.executable, "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={self.jobs}", "--data-dir", str(self.data)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flwd serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.api + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"flwd serve did not become healthy:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal our child by PID and wait for it; SIGKILL only if it will not stop."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise RuntimeError(f"flwd serve ignored {sig!r}:\n{self.log.read_text()}") from None
        return proc.returncode

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=30.0, **kwargs)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server shared by a test module (tests must not depend on each other's runs)."""
    server = ServerProcess(tmp_path_factory.mktemp("flwd-e2e"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that stop or restart it."""
    server = ServerProcess(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_http(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_server.client() as client:
        yield client
