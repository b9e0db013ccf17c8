"""`flwd run / runs / logs / cancel / artifacts` in local mode, through the real executable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flwd.engine.processes import run_processes

SECRET = "Cli-S3cret-Value-77"


def _write_job(root: Path, name: str, config: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "config.yaml").write_text(config)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    jobs = tmp_path / "jobs"
    _write_job(
        jobs,
        "greet",
        """
description: greets
args:
  type: object
  properties:
    name: {type: string, default: world}
    count: {type: integer, default: 1}
    tags: {type: array, items: {type: string}, default: []}
    token: {type: string, format: secret}
command: |
  i=0
  while [ $i -lt $FLWD_ARG_COUNT ]; do
    echo "hello $FLWD_ARG_NAME token=$FLWD_ARG_TOKEN"; i=$((i+1))
  done
  echo "to stderr" >&2
  printf '{"count": %s, "tags": %s}' "$FLWD_ARG_COUNT" "$FLWD_ARG_TAGS" > "$FLWD_RESULT_FILE"
  echo report > "$FLWD_ARTIFACTS_DIR/report.txt"
""",
    )
    _write_job(jobs, "broken", "command: echo failing; echo 'disk is full' >&2; exit 4\n")
    _write_job(
        jobs,
        "slow",
        "command: |\n  sleep 300 &\n  while true; do echo tick; sleep 0.1; done\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWD_") or k == "FLWD_PROFILE"}
    env.update(
        FLWD_DATA_DIR=str(tmp_path / "data"), FLWD_JOBS=f"local-fs={jobs}", FLWD_KILL_GRACE="1s"
    )
    return env


def flwd(
    env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flwd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_streams_output_prints_result_and_exits_zero(cli_env: dict[str, str]) -> None:
    done = flwd(
        cli_env,
        "run",
        "greet",
        "-a",
        "name=Ada",
        "-a",
        "count=2",
        "-a",
        'tags:=["x","y"]',
        "-a",
        f"token={SECRET}",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["hello Ada token=***", "hello Ada token=***"]
    assert json.loads(lines[2]) == {"count": 2, "tags": ["x", "y"]}
    assert "to stderr" in done.stderr and "to stderr" not in done.stdout
    assert " success" in done.stderr.splitlines()[-1]
    assert SECRET not in done.stdout + done.stderr


def test_runs_list_show_logs_and_artifacts(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert flwd(cli_env, "run", "greet", "-a", f"token={SECRET}").returncode == 0
    listing = json.loads(flwd(cli_env, "runs", "--json").stdout)
    assert listing["total"] == 1
    run = listing["runs"][0]
    assert run["job_id"] == "greet" and run["status"] == "success"
    assert run["run_id"].startswith("run_") and run["created_at"].endswith("Z")
    assert run["args"]["token"] == "***"

    shown = json.loads(flwd(cli_env, "runs", "show", run["run_id"], "--json").stdout)
    assert [s["step_id"] for s in shown["steps"]] == ["main"]
    assert shown["result"]["value"] == {"count": 1, "tags": []}

    logs = flwd(cli_env, "logs", run["run_id"])
    assert logs.stdout.splitlines() == ["hello world token=***"]
    assert logs.stderr.strip() == "to stderr"

    artifacts = json.loads(flwd(cli_env, "artifacts", "--run", run["run_id"], "--json").stdout)
    (artifact,) = artifacts["artifacts"]
    assert artifact["path"] == "report.txt" and artifact["media_type"] == "text/plain"
    target = tmp_path / "downloaded.txt"
    got = flwd(cli_env, "artifacts", "get", artifact["id"], "-o", str(target))
    assert got.returncode == 0 and target.read_text() == "report\n"


def test_a_relative_data_dir_gives_jobs_absolute_paths(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # the default data dir is `.flwd`, relative; the job runs in its own run directory
    env = {**cli_env, "FLWD_DATA_DIR": ".flwd"}
    done = flwd(env, "run", "greet", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["result"]["value"] == {"count": 1, "tags": []}
    artifacts = json.loads(flwd(env, "artifacts", "--json", cwd=tmp_path).stdout)["artifacts"]
    assert [a["name"] for a in artifacts] == ["report.txt"]
    assert (tmp_path / ".flwd" / "flwd.db").is_file()


def test_failed_run_exits_one_with_reason(cli_env: dict[str, str]) -> None:
    done = flwd(cli_env, "run", "broken")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["failing"]
    assert "disk is full" in done.stderr
    assert "failed (exit_code)" in done.stderr and "exited with code 4" in done.stderr


def test_bad_input_is_one_error_line_per_problem_without_traceback(cli_env: dict[str, str]) -> None:
    invalid = flwd(cli_env, "run", "greet", "-a", "count=many", "-a", "colour=red")
    assert invalid.returncode == 2
    assert "/count" in invalid.stderr and "colour" in invalid.stderr
    assert "Traceback" not in invalid.stderr
    unknown = flwd(cli_env, "run", "no/such-job")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: The job 'no/such-job' does not exist"
    malformed = flwd(cli_env, "run", "greet", "-a", "novalue")
    assert malformed.returncode == 2 and "key=value" in malformed.stderr
    missing = flwd(cli_env, "runs", "show", "run_nothing")
    assert missing.returncode == 2 and "run_nothing" in missing.stderr
    # A local run lives in the command's process, so it cannot be left running detached.
    detached = flwd(cli_env, "run", "greet", "--detach")
    assert detached.returncode == 2 and "--detach needs a server" in detached.stderr
    listed = flwd(cli_env, "runs", "--json")
    assert json.loads(listed.stdout)["runs"] == [], "a refused detach must not create a run"


def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_ctrl_c_cancels_the_run_and_every_process(cli_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flwd", "run", "slow"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "tick"
        listing = json.loads(flwd(cli_env, "runs", "--json").stdout)  # read-only, lock held
        run_id = listing["runs"][0]["run_id"]
        assert listing["runs"][0]["status"] == "running"
        assert run_processes(run_id), "the job's processes should be running"

        busy = flwd(cli_env, "run", "greet")
        assert busy.returncode == 2 and "another flwd process is using the data dir" in busy.stderr
        with socket.socket() as sock:  # a free port, in case the server wrongly started
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        server = flwd(cli_env, "serve", "--port", port, timeout=30)
        assert server.returncode == 1 and "Traceback" not in server.stderr
        assert server.stderr.startswith("error: another flwd process is using the data dir")

        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "cancelling" in err and "cancelled" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run_processes(run_id) == []
    shown = json.loads(flwd(cli_env, "runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "cancelled"


def test_plugins_lists_builtins_with_their_hooks(cli_env: dict[str, str]) -> None:
    done = flwd(cli_env, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    plugins = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    assert plugins["flwd.commands.runs"] == {
        "name": "flwd.commands.runs",
        "builtin": True,
        "hooks": ["register_commands"],
    }
    assert "register_source_types" in plugins["flwd.jobs.fs_source"]["hooks"]
