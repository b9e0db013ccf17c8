"""The contract's flows against a real `flwd serve`: jobs, runs, logs, cancel, artifacts."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import read_frames

pytestmark = pytest.mark.e2e


def create(http: httpx.Client, job_id: str, **body: object) -> dict[str, object]:
    response = http.post("/runs", json={"job_id": job_id, **body})
    assert response.status_code == 201, response.text
    run: dict[str, object] = response.json()
    return run


def wait_terminal(http: httpx.Client, run_id: object, timeout: float = 15.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, object] = http.get(f"/runs/{run_id}").json()
        if run["status"] in ("success", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} not terminal after {timeout}s")


def test_jobs_list_and_detail_with_slash_ids(api_http: httpx.Client) -> None:
    jobs = api_http.get("/jobs").json()["jobs"]
    ids = {job["id"] for job in jobs}
    assert {"hello", "demo/ticker", "demo/sleeper", "report"} <= ids
    demo = api_http.get("/jobs", params={"namespace": "demo"}).json()["jobs"]
    assert {job["id"] for job in demo} == {"demo/ticker", "demo/sleeper"}
    detail = api_http.get("/jobs/demo/ticker").json()
    assert detail["name"] == "ticker" and detail["namespace"] == "demo"
    assert detail["source"] == "local-fs"
    assert detail["args"]["properties"]["count"] == {"type": "integer", "default": 5}


def test_async_run_then_follow_logs_until_the_end(api_http: httpx.Client) -> None:
    run = create(api_http, "demo/ticker", args={"count": 4, "interval": 0.05})
    assert set(run) >= {"run_id", "job_id", "status", "created_at"}
    assert run["status"] in ("pending", "running")
    frames = read_frames(api_http, f"/runs/{run['run_id']}/logs?follow=true")
    assert [f["event"] for f in frames] == ["log"] * 4 + ["end"]
    assert [f["data"]["message"] for f in frames[:4]] == [f"tick {i}" for i in range(1, 5)]
    assert all(f["data"]["level"] == "info" for f in frames[:4])
    assert frames[-1]["data"] == {"run_id": run["run_id"], "status": "success"}
    logs = api_http.get(f"/runs/{run['run_id']}/logs").json()["logs"]
    assert [line["message"] for line in logs] == [f"tick {i}" for i in range(1, 5)]
    assert [line["id"] for line in logs] == [int(f["id"]) for f in frames[:4]]


def test_sync_run_returns_its_result(api_http: httpx.Client) -> None:
    run = create(api_http, "hello", args={"name": "flwd"}, **{"async": False})
    assert run["status"] == "success"
    assert run["result"]["value"] == {"greeting": "hello flwd"}  # type: ignore[index]
    assert run["args"] == {"name": "flwd"}
    assert run["finished_at"] is not None


def test_invalid_arguments_list_every_field(api_http: httpx.Client) -> None:
    response = api_http.post("/runs", json={"job_id": "hello", "args": {"name": 3, "x": 1}})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://flowd.org/problems/validation-error"
    paths = sorted(error["path"] for error in problem["errors"])
    assert paths[0] == "/args" or "/args/name" in paths
    assert len(problem["errors"]) == 2


def test_cancel_a_long_run(api_http: httpx.Client) -> None:
    run = create(api_http, "demo/sleeper")
    read_frames(
        api_http, f"/runs/{run['run_id']}/events", stop=lambda f: f["event"] == "run.output"
    )
    started = time.monotonic()
    response = api_http.post(f"/runs/{run['run_id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert time.monotonic() - started < 10
    again = api_http.post(f"/runs/{run['run_id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"] == "https://flowd.org/problems/run-not-cancellable"


def test_artifact_download_has_the_right_headers(api_http: httpx.Client) -> None:
    run = create(api_http, "report", **{"async": False})
    listing = api_http.get("/artifacts", params={"run_id": run["run_id"]})
    artifacts = listing.json()["artifacts"]
    assert len(artifacts) == 1
    artifact = artifacts[0]
    assert artifact["name"] == "report.csv" and artifact["size_bytes"] == 8
    download = api_http.get(f"/artifacts/{artifact['id']}")
    assert download.status_code == 200
    assert download.content == b"a,b\n1,2\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-length"] == "8"
    assert download.headers["content-disposition"] == 'attachment; filename="report.csv"'


def test_idempotency_key_and_conflict(api_http: httpx.Client) -> None:
    headers = {"Idempotency-Key": f"e2e-{time.monotonic_ns()}"}
    first = api_http.post("/runs", json={"job_id": "noop"}, headers=headers)
    again = api_http.post("/runs", json={"job_id": "noop"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["run_id"] == again.json()["run_id"]
    other = api_http.post("/runs", json={"job_id": "hello"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["type"] == "https://flowd.org/problems/idempotency-conflict"


def test_restart_makes_a_new_run_with_the_same_args(api_http: httpx.Client) -> None:
    run = create(api_http, "hello", args={"name": "again"}, **{"async": False})
    response = api_http.post(f"/runs/{run['run_id']}/restart", json={"async": False})
    assert response.status_code == 201, response.text
    restarted = response.json()
    assert restarted["run_id"] != run["run_id"]
    assert restarted["result"]["value"] == {"greeting": "hello again"}


def test_run_list_pagination_headers(api_http: httpx.Client) -> None:
    for _ in range(3):
        create(api_http, "noop", **{"async": False})
    response = api_http.get("/runs", params={"job_id": "noop", "limit": 2})
    body = response.json()
    total = body["total"]
    assert total >= 3 and len(body["runs"]) == 2
    assert response.headers["x-total-count"] == str(total)
    assert 'rel="next"' in response.headers["link"]
    assert "offset=2&limit=2" in response.headers["link"]
    newest_first = [r["created_at"] for r in body["runs"]]
    assert newest_first == sorted(newest_first, reverse=True)
    success = api_http.get("/runs", params={"status": "success", "job_id": "noop"}).json()
    assert all(r["status"] == "success" for r in success["runs"])


def test_health_ready_info(api_http: httpx.Client, api_server: ServerProcess) -> None:
    health = api_http.get("/health").json()
    assert health["status"] == "healthy" and health["uptime_seconds"] >= 0
    deadline = time.monotonic() + 10
    while (ready := api_http.get("/ready")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.json()["status"] == "ready"
    info = api_http.get("/system/info").json()
    assert info["sources"] == [{"name": "local-fs", "type": "fs", "path": str(api_server.jobs)}]
    assert isinstance(info["extensions"], list)
    # which containment mode is active, and what it guarantees, in words
    assert info["containment"]["mode"] in ("cgroup", "subreaper")
    assert (info["containment"]["path"] is not None) == (info["containment"]["mode"] == "cgroup")
    assert "run" in info["containment"]["guarantee"]


def test_protocol_errors_are_problems_over_uvicorn(api_http: httpx.Client) -> None:
    as_json = {"Content-Type": "application/json"}
    checks = [
        (api_http.get("/nope"), 404, "not-found"),
        (api_http.put("/runs", json={}), 405, "method-not-allowed"),
        (api_http.post("/runs", content=b"{", headers=as_json), 400, "malformed-request"),
        (
            api_http.post("/runs", content=b"x" * (2 << 20), headers=as_json),
            413,
            "payload-too-large",
        ),
        (api_http.post("/runs", data={"job_id": "noop"}), 415, "unsupported-media-type"),
    ]
    for response, status, slug in checks:
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"https://flowd.org/problems/{slug}"
        assert response.headers["x-request-id"]


def test_list_runs_searches_text_and_filters_by_creation_time(api_http: httpx.Client) -> None:
    token = f"needle{time.monotonic_ns()}"
    first = create(api_http, "hello", args={"name": f"{token}_a"}, **{"async": False})
    second = create(api_http, "hello", args={"name": f"{token}%b"}, **{"async": False})
    found = api_http.get("/runs", params={"q": token.upper()}).json()
    assert [r["run_id"] for r in found["runs"]] == [second["run_id"], first["run_id"]]
    assert found["total"] == 2
    # `%` and `_` are matched literally, not as LIKE wildcards
    assert [
        r["run_id"] for r in api_http.get("/runs", params={"q": f"{token}%"}).json()["runs"]
    ] == [second["run_id"]]
    assert api_http.get("/runs", params={"q": f"{token}_"}).json()["total"] == 1
    assert api_http.get("/runs", params={"q": f"{token}__"}).json()["total"] == 0
    # the job id is searched too, combined with the other filters
    both = api_http.get("/runs", params={"q": "hell", "job_id": "hello"}).json()
    assert both["total"] >= 2
    # from is inclusive, to exclusive, on created_at
    at = str(second["created_at"])
    window = {"q": token, "from": at}
    assert [r["run_id"] for r in api_http.get("/runs", params=window).json()["runs"]] == [
        second["run_id"]
    ]
    before = {"q": token, "to": at}
    assert [r["run_id"] for r in api_http.get("/runs", params=before).json()["runs"]] == [
        first["run_id"]
    ]
    bad = api_http.get("/runs", params={"from": "not a time"})
    assert bad.status_code == 400
    assert bad.json()["type"].endswith("/validation-error")
