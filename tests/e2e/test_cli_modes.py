"""Every CLI command prints the same in server mode and in local mode on the same data.

The runs are made through a real `flwd serve`; each read command is run against it with
`--server`, then the server is stopped and the same command runs locally on the data dir
it left. Commands that create runs are run both ways and compared with the new run ids
replaced by a placeholder (the only thing that must differ). `flwd cancel` is compared on
a finished run: an active local run lives inside its own `flwd run` process, which no
other local command can reach. `validate`, `serve`, `openapi` and `plugins` have no
server mode. The test also covers how a command finds the running server (`server.json`)
and the exit codes of `flwd logs -f`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from flwd.cli import build_cli
from tests.e2e.conftest import ServerProcess, write_jobs

pytestmark = pytest.mark.e2e

RUN_ID = re.compile(r"run_[0-9A-Z]{26}")
EXTRA_JOBS = {
    "demo/steps": (
        "steps:\n"
        "  - id: first\n"
        "    run: echo from first\n"
        "  - id: second\n"
        "    needs: first\n"
        "    run: echo from second; echo warn >&2\n"
    ),
    "fails": "command: echo trying; exit 3\n",
}


class Modes:
    """The same data dir and jobs, used through the server or directly."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        base = {
            k: v for k, v in os.environ.items() if not k.startswith("FLWD_") or k == "FLWD_PROFILE"
        }
        self.local_env = {
            **base,
            "FLWD_DATA_DIR": str(server.data),
            "FLWD_JOBS": f"local-fs={server.jobs}",
            "FLWD_KILL_GRACE": "1s",
        }

    def flwd(self, *args: str, remote: bool) -> subprocess.CompletedProcess[str]:
        """The real `flwd` executable, in a process of its own."""
        env = dict(self.local_env)
        if remote:
            env["FLWD_SERVER"] = self.server.url
        return subprocess.run(
            [sys.executable, "-m", "flwd", *args],
            env=env,
            cwd=self.server.tmp,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def invoke(self, *args: str, remote: bool) -> tuple[int, str, str]:
        """The same command group in this process (a second faster than a new Python),
        for the many commands the comparison runs: exit status, stdout, stderr."""
        env: dict[str, str | None] = {
            "FLWD_DATA_DIR": str(self.server.data),
            "FLWD_JOBS": f"local-fs={self.server.jobs}",
            "FLWD_KILL_GRACE": "1s",
            "FLWD_SERVER": self.server.url if remote else None,
        }
        result = CliRunner(env=env).invoke(build_cli(), list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def modes(tmp_path: Path) -> Iterator[Modes]:
    write_jobs(tmp_path / "jobs")
    for job_id, config in EXTRA_JOBS.items():
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (tmp_path / "jobs" / job_id / "config.yaml").write_text(config)
    server = ServerProcess(tmp_path)
    server.start()
    try:
        yield Modes(server)
    finally:
        server.stop()


def test_every_command_prints_the_same_in_both_modes(modes: Modes, tmp_path: Path) -> None:
    server = modes.server
    # Data, made through the server with the CLI in server mode.
    steps = modes.invoke("run", "demo/steps", remote=True)
    assert steps[0] == 0, steps[2]
    assert steps[1] == "[first] from first\n[second] from second\n"
    assert "[second] warn" in steps[2]
    steps_run = RUN_ID.findall(steps[2])[-1]
    report = modes.invoke("run", "report", remote=True)
    report_run = RUN_ID.findall(report[2])[-1]
    failed = modes.invoke("run", "fails", remote=True)
    assert failed[0] == 1
    failed_run = RUN_ID.findall(failed[2])[-1]
    artifact = httpx.get(f"{server.api}/artifacts", params={"run_id": report_run}).json()
    artifact_id = artifact["artifacts"][0]["id"]
    api_job = httpx.get(f"{server.api}/jobs/hello").json()

    reads = [
        ("jobs",),
        ("jobs", "--json"),
        ("jobs", "--namespace", "demo"),
        ("jobs", "show", "demo/steps"),
        ("jobs", "show", "hello", "--json"),
        ("jobs", "show", "no/such"),
        ("runs",),
        ("runs", "--json"),
        ("runs", "--job", "fails", "--status", "failed", "--json"),
        ("runs", "show", steps_run),
        ("runs", "show", steps_run, "--json"),
        ("runs", "show", "run_missing"),
        ("logs", steps_run),
        ("logs", steps_run, "--json"),
        ("logs", "-f", steps_run),
        ("logs", "-f", failed_run),
        ("logs", report_run),
        ("artifacts",),
        ("artifacts", "--run", report_run, "--json"),
        ("artifacts", "get", "artifact_missing"),
        ("cancel", report_run),
    ]
    remote = {args: modes.invoke(*args, remote=True) for args in reads}
    downloads = tmp_path / "downloads"
    got_remote = modes.invoke("artifacts", "get", artifact_id, "-o", f"{downloads}/", remote=True)
    remote_file = downloads / "report.csv"
    remote_bytes, remote_mode = remote_file.read_bytes(), remote_file.stat().st_mode
    remote_file.unlink()

    server.stop()
    assert not (server.data / "server.json").exists(), "a clean stop removes server.json"
    for args in reads:
        assert modes.invoke(*args, remote=False) == remote[args], args
    got_local = modes.invoke("artifacts", "get", artifact_id, "-o", f"{downloads}/", remote=False)
    assert got_local == got_remote == (0, f"{remote_file}\n", "")
    assert remote_file.read_bytes() == remote_bytes == b"a,b\n1,2\n"
    assert remote_file.stat().st_mode == remote_mode

    # Commands that create runs, each way once more.
    creates = [("run", "hello", "-a", "name=Ada"), ("restart", steps_run), ("run", "no/such")]
    server.start()
    remote_creates = {args: modes.invoke(*args, remote=True) for args in creates}
    server.stop()
    for args in creates:
        local = modes.invoke(*args, remote=False)
        code, out, err = remote_creates[args]
        assert local[0] == code, (args, local)
        assert RUN_ID.sub("RUN", local[1]) == RUN_ID.sub("RUN", out), args
        assert RUN_ID.sub("RUN", local[2]) == RUN_ID.sub("RUN", err), args

    # the outputs compared are the real thing, not two empty strings
    job = json.loads(remote[("jobs", "show", "hello", "--json")][1])
    missing_before = {"concurrency", "retries", "secret_args", "security_profile", "title"}
    assert missing_before <= set(job)
    assert job == api_job  # the CLI prints the API's body
    detail = json.loads(remote[("runs", "show", steps_run, "--json")][1])
    assert [s["step_id"] for s in detail["steps"]] == ["first", "second"]
    code, out, err = remote[("logs", "-f", failed_run)]
    assert code == 1 and out == "trying\n" and f"{failed_run} failed (exit_code)" in err
    assert remote[("logs", "-f", steps_run)][2].endswith(f"{steps_run} success\n")
    assert remote[("jobs", "show", "no/such")][0] == 1
    assert remote[("cancel", report_run)][0] == 2


def test_commands_find_the_server_running_on_their_data_dir(modes: Modes) -> None:
    server = modes.server
    found = json.loads((server.data / "server.json").read_text())
    assert found["url"] == server.url and found["pid"] == server.proc.pid  # type: ignore[union-attr]
    assert (server.data / "server.json").stat().st_mode & 0o777 == 0o600
    # The README's own command, with the server holding the data dir.
    done = modes.flwd("run", "hello", "-a", "name=Ada", remote=False)
    assert done.returncode == 0, done.stderr
    run_id = RUN_ID.findall(done.stderr)[-1]
    assert httpx.get(f"{server.api}/runs/{run_id}").json()["status"] == "success"
    # a detached run needs a server: the one found is one
    detached = modes.flwd("run", "demo/sleeper", "--detach", remote=False)
    assert detached.returncode == 0, detached.stderr
    sleeper = detached.stdout.strip()
    cancelled = modes.flwd("cancel", sleeper, remote=False)
    assert cancelled.stdout.strip() == f"{sleeper} cancelled"
    follow = modes.flwd("logs", "-f", sleeper, remote=False)
    assert follow.returncode == 3 and f"{sleeper} cancelled" in follow.stderr

    # A server that dies without cleaning up leaves server.json: it is ignored.
    server.stop(signal.SIGKILL)
    assert (server.data / "server.json").exists()
    local = modes.flwd("run", "hello", "-a", "name=Bo", remote=False)
    assert local.returncode == 0, local.stderr
    assert local.stdout == 'hello Bo\n{"greeting":"hello Bo"}\n'


def test_restart_overrides_arguments_and_exits_with_the_new_runs_status(modes: Modes) -> None:
    first = modes.flwd("run", "hello", "-a", "name=Ada", remote=True)
    run_id = RUN_ID.findall(first.stderr)[-1]
    again = modes.flwd("restart", run_id, "-a", "name=Bo", remote=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout == 'hello Bo\n{"greeting":"hello Bo"}\n'
    new_id = RUN_ID.findall(again.stderr)[-1]
    assert new_id != run_id
    assert httpx.get(f"{modes.server.api}/runs/{new_id}").json()["args"] == {"name": "Bo"}
    failing = RUN_ID.findall(modes.flwd("run", "fails", remote=True).stderr)[-1]
    assert modes.flwd("restart", failing, remote=True).returncode == 1
