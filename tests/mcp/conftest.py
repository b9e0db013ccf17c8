"""Fixtures of the MCP tests: a real `flwd serve` (with the MCP extension installed) on a
free loopback port, with the end-to-end jobs plus a few of the MCP tests' own.

Only processes these fixtures start are ever signalled, by their PID.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess

SECRET = "s3cr3t-Value-4711"

MCP_JOBS: dict[str, dict[str, Any]] = {
    "calc/add": {
        "name": "Add two numbers",
        "description": "Add a and b",
        "annotations": {"read_only": True, "destructive": False, "idempotent": True},
        "args": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "result_schema": {
            "type": "object",
            "properties": {"sum": {"type": "integer"}},
            "required": ["sum"],
        },
        "command": 'echo "::progress 50/100 adding"; echo "adding $FLWD_ARG_A and $FLWD_ARG_B"; '
        'printf \'{"sum": %d}\' $((FLWD_ARG_A + FLWD_ARG_B)) > "$FLWD_RESULT_FILE"',
    },
    "ops/login": {
        "description": "Use a secret token",
        "args": {
            "type": "object",
            "properties": {
                "token": {"type": "string", "format": "secret", "minLength": 8},
                "user": {"type": "string", "default": "me"},
            },
            "required": ["token"],
        },
        "command": 'echo "logging in with $FLWD_ARG_TOKEN"; '
        'printf \'{"echo": "%s"}\' "$FLWD_ARG_TOKEN" > "$FLWD_RESULT_FILE"',
    },
    "ops/fail": {"description": "Always fails", "command": "echo about to fail; exit 3"},
    "ops/hold": {
        "description": "Write the shell's and a sleeper's pids to PIDFILE, then wait",
        "args": {
            "type": "object",
            "properties": {"pidfile": {"type": "string"}},
            "required": ["pidfile"],
        },
        "command": 'sleep 120 & echo "$$ $!" > "$FLWD_ARG_PIDFILE.tmp"; '
        'mv "$FLWD_ARG_PIDFILE.tmp" "$FLWD_ARG_PIDFILE"; echo holding; wait',
    },
}


def add_job(jobs: Path, job_id: str, config: dict[str, Any]) -> None:
    folder = jobs / job_id
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A `flwd serve` shared by a test module; MCP at `{url}/mcp`."""
    server = ServerProcess(tmp_path_factory.mktemp("flwd-mcp"))
    for job_id, config in MCP_JOBS.items():
        add_job(server.jobs, job_id, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
