"""Sandboxed steps through a real `flwd serve`: an installed extension applies a strict
`StepPolicy` to every step with `flwd_security.sandbox` (what the security extension does
with its profile's `steps:`), and jobs run over HTTP see it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the strict policy needs a root server"),
]

_EXTENSION = """\
import os

import msgspec
from flwd.hookspecs import hookimpl
from flwd_security import sandbox
from flwd_security.policy import StepPolicy

POLICY = msgspec.json.decode(os.environ["SANDBOX_TEST_POLICY"], type=StepPolicy)


@hookimpl
def prepare_step(context):
    sandbox.apply(context, POLICY)


@hookimpl
def run_event(event):
    if event.type == "run.finished":
        sandbox.release(event.run_id)
"""

POLICY = {
    "env_allow": ["PATH"],
    "umask": 0o077,
    "no_new_privileges": True,
    "network": "none",
    "run_as": "run-user",
    "limits": {
        "cpu_seconds": 2,
        "memory": 64 << 20,
        "open_files": 256,
        "processes": 64,
        "file_size": 10 << 20,
    },
    "on_unavailable": "error",
}

_CONNECT = (
    "import os, socket\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(os.environ['FLWD_ARG_PORT'])), 5)\n"
    "    print('network: connected')\n"
    "except OSError:\n"
    "    print('network: refused')\n"
)

JOBS = {
    "probe": {
        "args": {"type": "object", "properties": {"port": {"type": "integer"}}},
        "steps": [
            {
                "id": "look",
                "run": 'id -u; echo "home=${HOME-unset} lang=${LANG-unset}"; umask; '
                "grep NoNewPrivs /proc/self/status; "
                "cat /etc/shadow >/dev/null 2>&1 && echo 'shadow: read' || echo 'shadow: denied'",
            },
            {"id": "connect", "needs": ["look"], "command": ["/usr/bin/python3", "-c", _CONNECT]},
        ],
    },
    "hog": {"command": ["/usr/bin/python3", "-c", "x = b'x' * (400 << 20)"]},
    "spin": {"command": "while :; do :; done"},
}


def _install(root: Path) -> None:
    (root / "sandbox_test_ext.py").write_text(_EXTENSION)
    info = root / "sandbox_test_ext-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sandbox-test-ext\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flwd]\nsandbox-test = sandbox_test_ext\n")


@pytest.fixture
def sandboxed_server() -> Iterator[ServerProcess]:
    # a directory other users may search: the run users reach their rooms under it
    tmp = Path(tempfile.mkdtemp(prefix="flwd-sandbox-e2e-", dir="/tmp"))
    tmp.chmod(0o711)
    (tmp / "ext").mkdir()
    _install(tmp / "ext")
    for job_id, config in JOBS.items():
        (tmp / "jobs" / job_id).mkdir(parents=True)
        (tmp / "jobs" / job_id / "config.yaml").write_text(json.dumps(config))
    path = os.pathsep.join([str(tmp / "ext"), *sys.path[1:]])
    server = ServerProcess(
        tmp,
        PYTHONPATH=path,
        SANDBOX_TEST_POLICY=json.dumps(POLICY),
        LANG="C.UTF-8",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _logs(http: object, run_id: str) -> list[str]:
    response = http.get(f"/runs/{run_id}/logs")  # type: ignore[attr-defined]
    return [line["message"] for line in response.json()["logs"]]


def test_a_strict_policy_holds_for_jobs_run_over_http(sandboxed_server: ServerProcess) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with sandboxed_server.client() as http:
            run = http.post(
                "/runs", json={"job_id": "probe", "args": {"port": port}, "async": False}
            )
            assert run.status_code in (200, 201), run.text
            body = run.json()
            lines = _logs(http, body["run_id"])
    finally:
        listener.close()
    assert body["status"] == "success", (body, lines)
    assert 200000 <= int(lines[0]) <= 265535
    assert lines[1].startswith("home=/") and lines[1].endswith("/run lang=unset")
    assert lines[2:] == ["0077", "NoNewPrivs:\t1", "shadow: denied", "network: refused"]


@pytest.mark.parametrize(
    ("job_id", "limit"),
    [("hog", "memory limit of 64 MiB exceeded"), ("spin", "CPU time limit of 2 s exceeded")],
)
def test_a_limit_hit_fails_the_run_with_resource_limit(
    sandboxed_server: ServerProcess, job_id: str, limit: str
) -> None:
    with sandboxed_server.client() as http:
        body = http.post("/runs", json={"job_id": job_id, "async": False}).json()
    assert body["status"] == "failed"
    assert body["reason"] == "resource_limit"
    assert limit in body["error"]
