"""Every failure is `application/problem+json` with type, title, status, detail, instance."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from flwd import errors
from flwd.api.problems import PROBLEM_TYPES, _pointer
from tests.api_support import FakeRunService

Client = AsyncTestClient[Litestar]
BASE = "https://flowd.org/problems/"


def assert_problem(response: object, status: int, slug: str, instance: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["type"] == BASE + slug
    assert body["title"] == PROBLEM_TYPES[slug].title
    assert body["status"] == status
    assert body["instance"] == instance
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def test_unknown_route_is_not_found(api_client: Client) -> None:
    response = await api_client.get("/api/v1/nope")
    body = assert_problem(response, 404, "not-found", "/api/v1/nope")
    assert "/api/v1/nope" in str(body["detail"])


async def test_wrong_method_is_method_not_allowed(api_client: Client) -> None:
    response = await api_client.delete("/api/v1/jobs")
    assert_problem(response, 405, "method-not-allowed", "/api/v1/jobs")
    assert "GET" in response.headers["allow"]


async def test_contract_job_not_found_example(api_client: Client) -> None:
    response = await api_client.get("/api/v1/jobs/backup/monthly")
    body = assert_problem(response, 404, "job-not-found", "/api/v1/jobs/backup/monthly")
    assert body["detail"] == "The job 'backup/monthly' does not exist"


async def test_run_not_found(api_client: Client) -> None:
    response = await api_client.get("/api/v1/runs/run_nope")
    assert_problem(response, 404, "run-not-found", "/api/v1/runs/run_nope")


async def test_malformed_json(api_client: Client) -> None:
    response = await api_client.post(
        "/api/v1/runs", content=b'{"job_id": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "malformed-request", "/api/v1/runs")


async def test_wrong_content_type(api_client: Client) -> None:
    response = await api_client.post(
        "/api/v1/runs", content=b"job_id=hello", headers={"Content-Type": "text/plain"}
    )
    body = assert_problem(response, 415, "unsupported-media-type", "/api/v1/runs")
    assert "application/json" in str(body["detail"])


async def test_oversized_body(api_client: Client) -> None:
    big = b'{"job_id": "hello", "args": {"x": "' + b"a" * 8000 + b'"}}'
    response = await api_client.post(
        "/api/v1/runs", content=big, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large", "/api/v1/runs")


async def test_body_shape_errors_point_at_the_field(api_client: Client) -> None:
    response = await api_client.post("/api/v1/runs", json={"job_id": 5, "args": {}})
    body = assert_problem(response, 400, "validation-error", "/api/v1/runs")
    assert body["errors"] == [{"path": "/job_id", "message": "Expected `str`, got `int`"}]
    response = await api_client.post("/api/v1/runs", json={"job": "hello"})
    body = assert_problem(response, 400, "validation-error", "/api/v1/runs")
    assert body["errors"] == [{"path": "/job", "message": "Object contains unknown field `job`"}]
    response = await api_client.post("/api/v1/runs", json={"args": {}})
    body = assert_problem(response, 400, "validation-error", "/api/v1/runs")
    assert body["errors"] == [
        {"path": "/job_id", "message": "Object missing required field `job_id`"}
    ]
    response = await api_client.post("/api/v1/runs", json=[])
    body = assert_problem(response, 400, "validation-error", "/api/v1/runs")
    assert body["errors"] == [{"path": "", "message": "Expected `object`, got `array`"}]


async def test_argument_errors_point_into_the_body(api_client: Client) -> None:
    response = await api_client.post("/api/v1/runs", json={"job_id": "backup/daily"})
    body = assert_problem(response, 400, "validation-error", "/api/v1/runs")
    assert body["errors"] == [{"path": "/args/target", "message": "'target' is required"}]


async def test_queue_full_has_retry_after(api_client: Client, api_service: FakeRunService) -> None:
    api_service.queue_full = True
    response = await api_client.post("/api/v1/runs", json={"job_id": "hello"})
    body = assert_problem(response, 429, "queue-full", "/api/v1/runs")
    assert response.headers["retry-after"] == "7"
    assert body["retry_after"] == 7


async def test_unexpected_error_leaks_no_traceback_or_secret(
    api_client: Client, api_service: FakeRunService
) -> None:
    api_service.fail_with = RuntimeError("password=hunter2 in /srv/secret.py line 3")
    response = await api_client.post("/api/v1/runs", json={"job_id": "hello"})
    # on POST /runs a failure to create the run is the contract's execution-error
    body = assert_problem(response, 500, "execution-error", "/api/v1/runs")
    assert body["request_id"] in body["detail"]
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("error", "slug"),
    [
        (errors.PermissionDenied("no runs:write scope"), "permission-denied"),
        # the store failing while a run is created is execution-error (the contract's)
        (errors.StorageError("database is locked"), "execution-error"),
        (errors.ResultInvalid("result does not match result_schema"), "execution-error"),
        (errors.Conflict("busy"), "conflict"),
    ],
)
async def test_domain_errors_map_to_their_slug(
    api_client: Client, api_service: FakeRunService, error: errors.FlwdError, slug: str
) -> None:
    api_service.fail_with = error
    response = await api_client.post("/api/v1/runs", json={"job_id": "hello"})
    body = assert_problem(response, PROBLEM_TYPES[slug].status, slug, "/api/v1/runs")
    if slug == "execution-error":  # the cause is logged, not told
        assert error.detail not in body["detail"] and body["request_id"] in body["detail"]
    else:
        assert body["detail"] == error.detail


def test_field_locations_become_json_pointers() -> None:
    assert _pointer("$.args.target") == "/args/target"
    assert _pointer("items[0].name") == "/items/0/name"
    assert _pointer("a/b~c") == "/a~1b~0c"
    assert _pointer("") == ""
