"""The run commands with `--server` / FLWD_SERVER talk to a real `flwd serve` and print
what they print in local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, free_port


def flwd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_") or k == "FLWD_PROFILE"}
    return subprocess.run(
        [sys.executable, "-m", "flwd", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_against_server_matches_local_mode(api_server: ServerProcess, tmp_path: Path) -> None:
    remote = flwd("run", "hello", "-a", "name=Ada", "--server", api_server.url)
    local = flwd(
        "run",
        "hello",
        "-a",
        "name=Ada",
        env={"FLWD_JOBS": f"local-fs={api_server.jobs}", "FLWD_DATA_DIR": str(tmp_path / "d")},
    )
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout == 'hello Ada\n{"greeting":"hello Ada"}\n'
    run_id = remote.stderr.split()[0]
    assert remote.stderr.strip() == f"{run_id} success"
    detail = httpx.get(f"{api_server.api}/runs/{run_id}").json()
    assert detail["status"] == "success" and detail["args"] == {"name": "Ada"}


def test_runs_logs_and_artifacts_through_flwd_server_env(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    env = {"FLWD_SERVER": api_server.url}
    done = flwd("run", "report", env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stderr.split()[0]
    listing = json.loads(flwd("runs", "--json", "--job", "report", env=env).stdout)
    assert run_id in [r["run_id"] for r in listing["runs"]] and listing["total"] >= 1
    assert flwd("logs", run_id, env=env).stdout == "written\n"
    artifacts = json.loads(flwd("artifacts", "--run", run_id, "--json", env=env).stdout)
    (artifact,) = artifacts["artifacts"]
    assert artifact["name"] == "report.csv" and artifact["media_type"] == "text/csv"
    got = flwd("artifacts", "get", artifact["id"], "-o", str(tmp_path), env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "report.csv").read_text() == "a,b\n1,2\n"


def test_follow_logs_and_cancel_over_http(api_server: ServerProcess) -> None:
    env = {"FLWD_SERVER": api_server.url}
    ticker = flwd("run", "demo/ticker", "-a", "count=3", "--detach", env=env)
    run_id = ticker.stdout.strip()
    follow = flwd("logs", run_id, "-f", env=env)
    assert follow.stdout.splitlines() == ["tick 1", "tick 2", "tick 3"]
    assert follow.returncode == 0 and follow.stderr == f"{run_id} success\n"

    sleeper = flwd("run", "demo/sleeper", "--detach", env=env).stdout.strip()
    cancelled = flwd("cancel", sleeper, env=env)
    assert cancelled.stdout.strip() == f"{sleeper} cancelled"
    again = flwd("cancel", sleeper, env=env)
    assert again.returncode == 2 and "already cancelled" in again.stderr


@pytest.mark.parametrize("announced", [True, False], ids=["server.json", "no-server.json"])
def test_local_follow_on_the_data_dir_of_a_running_server(
    api_server: ServerProcess, announced: bool
) -> None:
    """`flwd logs -f` without --server on the server's data dir finds the server through
    its server.json and follows the run there. Without the file (removed by hand) it opens
    the database read-only and re-reads it until the run has ended. Either way it ends
    with the summary line."""
    server_file = api_server.data / "server.json"
    saved = server_file.read_bytes()
    if not announced:
        server_file.unlink()
    try:
        created = httpx.post(
            f"{api_server.api}/runs",
            json={"job_id": "demo/ticker", "args": {"count": 6, "interval": 0.3}},
        ).json()
        started = time.monotonic()
        env = {"FLWD_DATA_DIR": str(api_server.data)}
        follow = flwd("logs", created["run_id"], "-f", env=env)
    finally:
        server_file.write_bytes(saved)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == [f"tick {i}" for i in range(1, 7)]
    assert follow.stderr == f"{created['run_id']} success\n"
    # it returned because the run ended (~1.8 s), not after some long idle timeout
    assert time.monotonic() - started < 15
    detail = httpx.get(f"{api_server.api}/runs/{created['run_id']}").json()
    assert detail["status"] == "success"


def test_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = flwd("runs", "--server", url)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach flwd at") and "Traceback" not in done.stderr
