"""Access control and confinement in the core, proven against a real `flwd serve` that
loads a test-only access plugin (`tests/plugins/header_actor.py`, through
`FLWD_PLUGINS`): the caller is whoever the `X-Test-Actor` header names."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flwd.plugins import installed_extensions
from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import read_frames

ROOT = Path(__file__).resolve().parents[2]
TENANT_A = {"X-Test-Actor": "alice;tenant=a"}
TENANT_B = {"X-Test-Actor": "bob;tenant=b"}
DEMO_ONLY = {"X-Test-Actor": "dora;jobs=demo/*"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = ServerProcess(
        tmp_path_factory.mktemp("flwd-access"),
        FLWD_PLUGINS="tests.plugins.header_actor",
        PYTHONPATH=path,
        # the core alone: an installed access extension would be asked too
        FLWD_DISABLE_EXTENSIONS=",".join(installed_extensions()),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _run(http: httpx.Client, headers: dict[str, str], job_id: str, **body: Any) -> dict[str, Any]:
    created = http.post("/runs", json={"job_id": job_id, "async": False, **body}, headers=headers)
    assert created.status_code == 201, created.text
    run: dict[str, Any] = created.json()
    return run


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug)
    return body


def _without_ids(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("detail", "instance", "request_id")}


def test_a_tenant_cannot_read_another_tenants_run_by_id(http: httpx.Client) -> None:
    run = _run(http, TENANT_A, "report")
    assert run["tenant"] == "a"
    run_id = run["run_id"]
    assert http.get(f"/runs/{run_id}", headers=TENANT_A).status_code == 200
    missing = _problem(http.get("/runs/run_missing", headers=TENANT_B), 404, "run-not-found")
    for path in ("", "/steps", "/logs", "/events", "/logs?follow=true"):
        hidden = _problem(http.get(f"/runs/{run_id}{path}", headers=TENANT_B), 404, "run-not-found")
        # exactly like a missing run: same members, same wording
        assert _without_ids(hidden) == _without_ids(missing)
        assert hidden["detail"] == f"The run '{run_id}' does not exist"
    for action in ("cancel", "restart"):
        _problem(http.post(f"/runs/{run_id}/{action}", headers=TENANT_B), 404, "run-not-found")
    # the stream of every run, filtered by run id, too
    _problem(http.get(f"/events/runs?run_id={run_id}", headers=TENANT_B), 404, "run-not-found")


def test_lists_and_totals_leave_out_another_tenants_runs(http: httpx.Client) -> None:
    mine = [_run(http, TENANT_B, "noop")["run_id"] for _ in range(2)]
    theirs = _run(http, TENANT_A, "noop")["run_id"]
    listed = http.get("/runs", params={"limit": 1000}, headers=TENANT_B)
    assert listed.status_code == 200
    ids = [r["run_id"] for r in listed.json()["runs"]]
    assert set(mine) <= set(ids) and theirs not in ids
    assert {r["tenant"] for r in listed.json()["runs"]} == {"b"}
    assert listed.json()["total"] == len(ids) == int(listed.headers["x-total-count"])
    # asking for the other tenant explicitly finds nothing either
    other = http.get("/runs", params={"tenant": "a"}, headers=TENANT_B).json()
    assert other == {"runs": [], "total": 0}
    # an actor that is not confined sees both
    everyone = http.get("/runs", params={"limit": 1000}).json()
    assert theirs in [r["run_id"] for r in everyone["runs"]]
    assert everyone["total"] > listed.json()["total"]


def test_a_tenant_cannot_download_or_list_another_tenants_artifacts(http: httpx.Client) -> None:
    run_id = _run(http, TENANT_A, "report")["run_id"]
    artifacts = http.get("/artifacts", params={"run_id": run_id}, headers=TENANT_A).json()
    (artifact,) = artifacts["artifacts"]
    assert http.get(f"/artifacts/{artifact['id']}", headers=TENANT_A).content == b"a,b\n1,2\n"
    missing = _problem(http.get("/artifacts/nope", headers=TENANT_B), 404, "artifact-not-found")
    hidden = _problem(
        http.get(f"/artifacts/{artifact['id']}", headers=TENANT_B), 404, "artifact-not-found"
    )
    assert _without_ids(hidden) == _without_ids(missing)
    for params in ({}, {"run_id": run_id}):
        listed = http.get("/artifacts", params=params, headers=TENANT_B)
        assert artifact["id"] not in [a["id"] for a in listed.json()["artifacts"]]
        assert listed.json()["total"] == int(listed.headers["x-total-count"])
    assert http.get("/artifacts", params={"run_id": run_id}, headers=TENANT_B).json() == {
        "artifacts": [],
        "total": 0,
    }


def test_the_global_event_stream_leaves_out_another_tenants_runs(http: httpx.Client) -> None:
    theirs = _run(http, TENANT_A, "hello")["run_id"]
    mine = _run(http, TENANT_B, "hello")["run_id"]
    # from the first event on, until bob's run has finished
    frames = read_frames(
        http,
        "/events/runs?since=0",
        headers=TENANT_B,
        stop=lambda f: f["data"].get("run_id") == mine and f["event"] == "run.finished",
    )
    seen = {f["data"]["run_id"] for f in frames}
    assert mine in seen and theirs not in seen
    assert all(f["data"].get("tenant", "b") == "b" for f in frames)
    everyone = read_frames(
        http,
        "/events/runs?since=0",
        stop=lambda f: f["data"].get("run_id") == mine and f["event"] == "run.finished",
    )
    assert theirs in {f["data"]["run_id"] for f in everyone}


def test_the_tenant_of_a_run_comes_from_its_caller(http: httpx.Client) -> None:
    assert _run(http, TENANT_B, "noop")["tenant"] == "b"
    assert _run(http, TENANT_B, "noop", tenant="b")["tenant"] == "b"
    refused = http.post("/runs", json={"job_id": "noop", "tenant": "a"}, headers=TENANT_B)
    _problem(refused, 403, "permission-denied")
    # a caller confined to no tenant picks any (or gets `default`)
    assert _run(http, {}, "noop", tenant="a")["tenant"] == "a"
    assert _run(http, {}, "noop")["tenant"] == "default"


def test_a_job_pattern_confined_actor_cannot_run_or_see_another_job(http: httpx.Client) -> None:
    other = _run(http, {}, "hello")["run_id"]
    _problem(http.post("/runs", json={"job_id": "hello"}, headers=DEMO_ONLY), 404, "job-not-found")
    _problem(http.get("/jobs/hello", headers=DEMO_ONLY), 404, "job-not-found")
    jobs = http.get("/jobs", headers=DEMO_ONLY).json()
    assert sorted(j["id"] for j in jobs["jobs"]) == ["demo/sleeper", "demo/ticker"]
    _problem(http.get(f"/runs/{other}", headers=DEMO_ONLY), 404, "run-not-found")
    mine = _run(http, DEMO_ONLY, "demo/ticker", args={"count": 1, "interval": 0})
    listed = http.get("/runs", params={"limit": 1000}, headers=DEMO_ONLY).json()
    assert mine["run_id"] in [r["run_id"] for r in listed["runs"]]
    assert {r["job_id"] for r in listed["runs"]} == {"demo/ticker"}
    assert listed["total"] == len(listed["runs"])


def test_an_unknown_credential_is_a_401_and_a_denied_action_a_403(http: httpx.Client) -> None:
    refused = http.get("/runs", headers={"X-Test-Actor": "bad"})
    _problem(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"] == "Bearer"
    # open routes ask nobody
    assert http.get("/health", headers={"X-Test-Actor": "bad"}).status_code == 200
    denied = {"X-Test-Actor": "eve;deny=view-runs,cancel-run"}
    _problem(http.get("/runs", headers=denied), 403, "permission-denied")
    assert http.get("/jobs", headers=denied).status_code == 200
    run_id = _run(http, {}, "noop")["run_id"]
    _problem(http.post(f"/runs/{run_id}/cancel", headers=denied), 403, "permission-denied")
    # refused on the run itself (the route as a whole is allowed): checked where the run
    # is known
    on_runs = {"X-Test-Actor": "rita;deny-run=view-runs,view-artifacts"}
    assert http.get("/runs", headers=on_runs).status_code == 200
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/logs", f"/runs/{run_id}/events"):
        _problem(http.get(path, headers=on_runs), 403, "permission-denied")
    _problem(
        http.get("/artifacts", params={"run_id": run_id}, headers=on_runs), 403, "permission-denied"
    )


def test_the_jobs_stream_tells_only_of_jobs_the_actor_sees(server: ServerProcess) -> None:
    """Last in this module: it adds job folders to the shared server's catalogue."""
    frames: list[dict[str, Any]] = []
    connected = threading.Event()

    def follow() -> None:
        deadline = time.monotonic() + 20
        with (
            server.client() as client,
            client.stream("GET", "/events/jobs", headers=DEMO_ONLY, timeout=20) as response,
        ):
            connected.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line.removeprefix("data: ")))
                    return
                if time.monotonic() > deadline:
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(20), "the stream did not open"
    for job_id in ("zz-other", "demo/new"):  # one the actor does not see, then one it sees
        folder = server.jobs / job_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps({"command": "true"}))
    reader.join(25)
    assert not reader.is_alive(), "no jobs.changed frame within 20 s"
    (frame,) = frames
    assert frame["added"] == ["demo/new"]
    assert "zz-other" not in json.dumps(frame)
