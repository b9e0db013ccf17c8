"""Every hook of `flwd.hookspecs` is called as documented, in a real `flwd serve` process
that loads the recording test plugin (`tests/plugins/recorder.py`) through
`FLWD_PLUGINS`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flwd.plugins import installed_extensions
from tests.e2e.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
RECORDER = "tests.plugins.recorder"


def _env(log: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        "FLWD_PLUGINS": RECORDER,
        "FLWD_TEST_HOOK_LOG": str(log),
        "PYTHONPATH": path,
        # the core alone: installed extensions (the security one) would answer hooks too
        "FLWD_DISABLE_EXTENSIONS": ",".join(installed_extensions()),
    }


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_hook_is_called_as_documented(tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    server = ServerProcess(tmp_path, **_env(log))
    rejected = server.jobs / "rejected"
    rejected.mkdir()
    (rejected / "config.yaml").write_text(json.dumps({"command": "true"}))
    server.start()
    try:
        with server.client() as http:
            created = http.post("/runs", json={"job_id": "hello", "async": False})
            assert created.status_code == 201, created.text
            run = created.json()
            assert run["status"] == "success"
            assert http.get(f"/runs/{run['run_id']}").status_code == 200
            assert http.get("/recorder/ping").json() == {"pong": "yes"}
            jobs = http.get("/jobs").json()
            assert "rejected" not in [j["id"] for j in jobs["jobs"]]
            (bad,) = [j for j in jobs["invalid"] if j["id"] == "rejected"]
            assert [d["reason"] for d in bad["diagnostics"]] == ["rejected by the recorder plugin"]
    finally:
        assert server.stop() == 0
    calls = _calls(log)
    by_hook: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_hook.setdefault(call["hook"], []).append(call)
    run_id = run["run_id"]

    # the CLI, once, before the command line is parsed
    assert by_hook["register_commands"] == [{"hook": "register_commands", "group": "cli"}]
    assert by_hook["register_source_types"]
    # the app: routes and configuration before it is built, with the built-in middleware
    # (access control) already in place
    assert by_hook["register_routes"] == [{"hook": "register_routes", "settings": "Settings"}]
    (configured,) = by_hook["configure_app"]
    assert configured["config"] == "AppConfig" and configured["settings"] == "Settings"
    # the request guards wrap routing itself (FlwdApp), outside the middleware list
    assert configured["middleware"] == ["AccessControl"]
    # the lifecycle: startup after the catalogue is loaded, shutdown on SIGTERM, last
    assert [c["hook"] for c in calls].index("startup") > [c["hook"] for c in calls].index(
        "validate_job"
    )
    assert by_hook["startup"] == [{"hook": "startup", "settings": "Settings"}]
    assert by_hook["shutdown"] == [{"hook": "shutdown", "settings": "Settings"}]
    assert calls[-1]["hook"] == "shutdown"
    # every loaded job is validated
    validated = {c["job_id"] for c in by_hook["validate_job"]}
    assert {"hello", "noop", "rejected", "demo/ticker"} <= validated
    # every non-open request is identified, then checked against its route's action
    paths = [(c["method"], c["path"]) for c in by_hook["actor_from_request"]]
    assert ("POST", "/api/v1/runs") in paths and ("GET", f"/api/v1/runs/{run_id}") in paths
    assert ("GET", "/api/v1/recorder/ping") in paths
    assert not [p for p in paths if p[1] == "/api/v1/health"], "health is open"
    checks = [
        (c["action"], c["kind"], c["job_id"], c["run_id"], c["tenant"])
        for c in by_hook["permission_allowed"]
    ]
    assert ("run-job", "system", None, None, None) in checks  # the route's action
    assert ("run-job", "job", "hello", None, "default") in checks  # the job, with the tenant
    assert ("view-runs", "run", "hello", run_id, "default") in checks  # the run read back
    assert ("view-system", "system", None, None, None) in checks  # the extension's route
    assert ("view-jobs", "system", None, None, None) in checks
    # the run: its profile resolved once, before its step; the step prepared, then its
    # executor chosen with the prepared context (profile included)
    assert by_hook["resolve_profile"] == [
        {"hook": "resolve_profile", "job_id": "hello", "settings": "Settings"}
    ]
    (prepared,) = by_hook["prepare_step"]
    assert prepared == {
        "hook": "prepare_step",
        "run_id": run_id,
        "job_id": "hello",
        "step_id": "main",
        "attempt": 0,
        "profile": {"name": "recorded-profile"},
    }
    (chosen,) = by_hook["resolve_executor"]
    assert chosen["run_id"] == run_id and chosen["profile"] == {"name": "recorded-profile"}
    order = [c["hook"] for c in calls]
    assert (
        order.index("resolve_profile")
        < order.index("prepare_step")
        < order.index("resolve_executor")
    )
    # every journal event of the run, in id order
    events = [c for c in by_hook["run_event"] if c["run_id"] == run_id]
    assert events[0]["type"] == "run.created" and events[-1]["type"] == "run.finished"
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})


def test_a_plugin_command_is_registered_through_flwd_plugins(tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "flwd", "recorder-hello"],
        env={**os.environ, **_env(log)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "hello from the recorder\n"), result.stderr
    assert [c["hook"] for c in _calls(log)] == ["register_commands"]


def test_flwd_validate_applies_validate_job(tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    for job_id in ("fine", "rejected"):
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (tmp_path / "jobs" / job_id / "config.yaml").write_text(json.dumps({"command": "true"}))
    result = subprocess.run(
        [sys.executable, "-m", "flwd", "validate", "--json", str(tmp_path / "jobs")],
        env={**os.environ, **_env(log)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] == ["fine"]
    (bad,) = report["invalid"]
    assert bad["id"] == "rejected"
    assert [d["reason"] for d in bad["diagnostics"]] == ["rejected by the recorder plugin"]
    validated = [c["job_id"] for c in _calls(log) if c["hook"] == "validate_job"]
    assert sorted(validated) == ["fine", "rejected"]
