"""The HTTP API over an in-memory backend: fields, filters, headers of every route."""

from __future__ import annotations

import pathlib
from datetime import UTC, datetime

from litestar import Litestar
from litestar.testing import AsyncTestClient

from flwd import __version__
from flwd.models import Artifact
from tests.api_support import FakeRunService

Client = AsyncTestClient[Litestar]


async def test_jobs_list_has_contract_fields_and_invalid_folders(api_client: Client) -> None:
    response = await api_client.get("/api/v1/jobs")
    assert response.status_code == 200
    body = response.json()
    hello = next(j for j in body["jobs"] if j["id"] == "hello")
    assert hello == {
        "id": "hello",
        "name": "hello",
        "namespace": "",
        "source": "local-fs",
        "version": "1.0.0",
        "description": "Say hello",
        "tags": [],
    }
    assert body["invalid"][0]["id"] == "broken"
    assert body["invalid"][0]["diagnostics"][0] == {
        "file": "broken/config.yaml",
        "reason": "bad yaml",
        "line": 3,
    }


async def test_jobs_list_filters_by_namespace_and_source(api_client: Client) -> None:
    body = (await api_client.get("/api/v1/jobs", params={"namespace": "backup"})).json()
    assert sorted(j["id"] for j in body["jobs"]) == ["backup/daily", "backup/weekly"]
    body = (await api_client.get("/api/v1/jobs", params={"source": "elsewhere"})).json()
    assert body == {"jobs": [], "invalid": []}


async def test_job_detail_accepts_ids_with_slashes(api_client: Client) -> None:
    response = await api_client.get("/api/v1/jobs/backup/daily")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "backup/daily"
    assert body["namespace"] == "backup"
    assert body["args"] == {"type": "object", "required": ["target"]}


async def test_invalid_job_detail_is_a_job_invalid_problem(api_client: Client) -> None:
    response = await api_client.get("/api/v1/jobs/broken")
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "https://flowd.org/problems/job-invalid"
    assert body["errors"] == [{"path": "", "message": "bad yaml"}]


async def test_create_run_returns_contract_fields_and_location(api_client: Client) -> None:
    response = await api_client.post("/api/v1/runs", json={"job_id": "hello", "args": {}})
    assert response.status_code == 201
    body = response.json()
    assert body["run_id"].startswith("run_")
    assert body["job_id"] == "hello"
    assert body["status"] == "pending"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["location"] == f"/api/v1/runs/{body['run_id']}"


async def test_create_run_sync_waits_and_returns_the_result(api_client: Client) -> None:
    response = await api_client.post("/api/v1/runs", json={"job_id": "hello", "async": False})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "success"
    assert body["result"] == {"value": {"ok": True}}


async def test_idempotency_key_returns_original_or_conflicts(api_client: Client) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = await api_client.post("/api/v1/runs", json={"job_id": "hello"}, headers=headers)
    again = await api_client.post("/api/v1/runs", json={"job_id": "hello"}, headers=headers)
    assert again.json()["run_id"] == first.json()["run_id"]
    other = await api_client.post(
        "/api/v1/runs", json={"job_id": "hello", "args": {"x": 1}}, headers=headers
    )
    assert other.status_code == 409
    assert other.json()["type"] == "https://flowd.org/problems/idempotency-conflict"


async def test_list_runs_filters_and_paginates_with_headers(api_client: Client) -> None:
    for _ in range(5):
        await api_client.post("/api/v1/runs", json={"job_id": "hello"})
    await api_client.post("/api/v1/runs", json={"job_id": "backup/weekly"})
    response = await api_client.get(
        "/api/v1/runs", params={"job_id": "hello", "limit": 2, "offset": 2}
    )
    body = response.json()
    assert body["total"] == 5
    assert [r["run_id"] for r in body["runs"]] == ["run_0003", "run_0002"]
    assert response.headers["x-total-count"] == "5"
    links = response.headers["link"]
    assert '</api/v1/runs?job_id=hello&offset=4&limit=2>; rel="next"' in links
    assert '</api/v1/runs?job_id=hello&offset=0&limit=2>; rel="prev"' in links
    assert '</api/v1/runs?job_id=hello&offset=4&limit=2>; rel="last"' in links


async def test_list_runs_rejects_bad_status_with_a_pointer(api_client: Client) -> None:
    response = await api_client.get("/api/v1/runs", params={"status": "sleeping", "limit": 0})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "https://flowd.org/problems/validation-error"
    paths = {(e["path"], e.get("in")) for e in body["errors"]}
    assert ("/status", "query") in paths or ("/limit", "query") in paths


async def test_list_runs_rejects_a_bad_time_or_an_overlong_search(api_client: Client) -> None:
    for params, path in (
        ({"from": "yesterday"}, "/from"),
        ({"to": "2026-01-15T10:30:00"}, "/to"),  # no UTC offset
        ({"q": "x" * 201}, "/q"),
    ):
        response = await api_client.get("/api/v1/runs", params=params)
        assert response.status_code == 400, params
        body = response.json()
        assert body["type"] == "https://flowd.org/problems/validation-error"
        assert [e["path"] for e in body["errors"]] == [path]
    ok = await api_client.get(
        "/api/v1/runs", params={"q": "x" * 200, "from": "2026-01-15T10:30:00+02:00"}
    )
    assert ok.status_code == 200


async def test_run_detail_cancel_and_restart(
    api_client: Client, api_service: FakeRunService
) -> None:
    run_id = (await api_client.post("/api/v1/runs", json={"job_id": "hello"})).json()["run_id"]
    detail = (await api_client.get(f"/api/v1/runs/{run_id}")).json()
    assert detail["run_id"] == run_id and detail["args"] == {}
    cancelled = await api_client.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await api_client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["type"] == "https://flowd.org/problems/run-not-cancellable"
    restarted = await api_client.post(f"/api/v1/runs/{run_id}/restart")
    assert restarted.status_code == 201
    assert restarted.json()["job_id"] == "hello"
    assert restarted.json()["run_id"] != run_id
    steps = (await api_client.get(f"/api/v1/runs/{run_id}/steps")).json()
    assert steps["steps"][0]["step_id"] == "main"


async def test_logs_json_with_since_id_and_timestamp(
    api_client: Client, api_service: FakeRunService
) -> None:
    run_id = (await api_client.post("/api/v1/runs", json={"job_id": "hello"})).json()["run_id"]
    first = await api_service.output(run_id, "one")
    await api_service.output(run_id, "two")
    body = (await api_client.get(f"/api/v1/runs/{run_id}/logs")).json()
    assert [line["message"] for line in body["logs"]] == ["one", "two"]
    assert body["logs"][0] == {
        "id": first.id,
        "timestamp": first.timestamp.isoformat().replace("+00:00", "Z"),
        "level": "info",
        "message": "one",
        "step_id": "main",
    }
    since_id = (await api_client.get(f"/api/v1/runs/{run_id}/logs?since={first.id}")).json()
    assert [line["message"] for line in since_id["logs"]] == ["two"]
    stamp = first.timestamp.isoformat()
    by_time = await api_client.get(f"/api/v1/runs/{run_id}/logs", params={"since": stamp})
    assert [line["message"] for line in by_time.json()["logs"]] == ["two"]
    bad = await api_client.get(f"/api/v1/runs/{run_id}/logs", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["path"] == "/since"


async def test_artifacts_list_and_streamed_download(
    api_client: Client, api_service: FakeRunService, tmp_path: pathlib.Path
) -> None:
    data = tmp_path / "report.csv"
    data.write_bytes(b"a,b\n1,2\n")
    # an artifact belongs to a stored run (its download is checked against the run)
    run = await api_service.create_run("hello", {}, tenant="default")
    artifact = Artifact(
        id="artifact_1",
        run_id=run.run_id,
        name="report.csv",
        path="report.csv",
        media_type="text/csv",
        size_bytes=8,
        sha256="abc",
        created_at=datetime.now(UTC),
    )
    api_service.artifacts[artifact.id] = (artifact, data)
    listing = await api_client.get("/api/v1/artifacts", params={"run_id": "run_0001"})
    assert listing.json()["artifacts"][0]["size_bytes"] == 8
    assert listing.headers["x-total-count"] == "1"
    download = await api_client.get("/api/v1/artifacts/artifact_1")
    assert download.status_code == 200
    assert download.content == b"a,b\n1,2\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-length"] == "8"
    assert download.headers["content-disposition"].startswith("attachment")
    assert "report.csv" in download.headers["content-disposition"]
    missing = await api_client.get("/api/v1/artifacts/artifact_9")
    assert missing.json()["type"] == "https://flowd.org/problems/artifact-not-found"


async def test_health_ready_and_system_info(
    api_client: Client, api_service: FakeRunService
) -> None:
    health = (await api_client.get("/api/v1/health")).json()
    assert health["status"] == "healthy"
    assert health["version"] == __version__
    assert isinstance(health["uptime_seconds"], int)
    ready = await api_client.get("/api/v1/ready")
    assert ready.json() == {"status": "ready", "store": True, "watcher": True}
    info = (await api_client.get("/api/v1/system/info")).json()
    assert info == {
        "version": __version__,
        "sources": [{"name": "local-fs", "type": "fs", "path": "/srv/jobs"}],
        "extensions": [],
        "containment": {"mode": "subreaper", "guarantee": "the fake's", "path": None},
    }
    api_service.is_healthy = False
    not_ready = await api_client.get("/api/v1/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["type"] == "https://flowd.org/problems/not-ready"
    assert "store" in not_ready.json()["detail"]


async def test_request_id_is_echoed_or_generated(api_client: Client) -> None:
    echoed = await api_client.get("/api/v1/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await api_client.get("/api/v1/nowhere", headers={"X-Request-ID": "bad id\t"})
    rid = generated.headers["x-request-id"]
    assert len(rid) == 32 and rid != "bad id"
    assert generated.json()["request_id"] == rid


async def test_root_redirects_to_the_api_docs(api_client: Client) -> None:
    response = await api_client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/api/docs"


async def test_head_answers_every_get_route_without_a_body(api_client: Client) -> None:
    for path in ("/api/v1/jobs", "/api/v1/runs", "/api/v1/health", "/api/docs/openapi.json"):
        got = await api_client.get(path)
        head = await api_client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    assert (await api_client.head("/api/v1/runs/run_missing")).status_code == 404
    # a stream answers its headers and ends at once: no event is awaited
    stream = await api_client.head("/api/v1/events/runs")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.content == b""


async def test_an_unknown_query_parameter_is_a_problem_naming_it(api_client: Client) -> None:
    response = await api_client.get("/api/v1/runs", params={"limt": "5", "job_id": "hello"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "https://flowd.org/problems/validation-error"
    assert body["errors"] == [
        {"path": "/limt", "message": "unknown query parameter", "in": "query"}
    ]
    assert "limt" in body["detail"]
    ok = await api_client.get("/api/v1/runs", params={"from": "2026-01-01T00:00:00Z"})
    assert ok.status_code == 200
    logs = await api_client.get("/api/v1/jobs/hello", params={"verbose": "1"})
    assert logs.status_code == 400
