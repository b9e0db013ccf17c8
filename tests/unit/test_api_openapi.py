"""The OpenAPI document covers the contract and describes errors as problems."""

from __future__ import annotations

import json

from click.testing import CliRunner

from flwd.app import create_app
from flwd.cli import build_cli
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings

CONTRACT = {
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{run_id}"),
    ("get", "/api/v1/runs/{run_id}/logs"),
    ("post", "/api/v1/runs/{run_id}/cancel"),
    ("get", "/api/v1/artifacts"),
    ("get", "/api/v1/artifacts/{artifact_id}"),
    ("get", "/api/v1/health"),
    ("get", "/api/v1/system/info"),
    ("get", "/api/v1/events/runs"),
}
ADDITIONS = {
    ("get", "/api/v1/runs/{run_id}/events"),
    ("post", "/api/v1/runs/{run_id}/restart"),
    ("get", "/api/v1/ready"),
}


def schema() -> dict[str, object]:
    app = create_app(Settings(), make_plugin_manager(load_entrypoints=False))
    return app.openapi_schema.to_schema()


def test_every_contract_route_is_documented() -> None:
    paths = schema()["paths"]
    assert isinstance(paths, dict)
    present = {(method, path) for path, item in paths.items() for method in item}
    assert present >= CONTRACT | ADDITIONS


def test_error_responses_are_problem_documents() -> None:
    doc = schema()
    paths = doc["paths"]
    assert isinstance(paths, dict)
    for path, item in paths.items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    content = response["content"]
                    assert list(content) == ["application/problem+json"], (method, path, status)
    problem = doc["components"]["schemas"]["Problem"]  # type: ignore[index]
    assert {"type", "title", "status", "detail", "instance"} <= set(problem["required"])


def test_request_and_response_bodies_are_typed() -> None:
    paths = schema()["paths"]
    create = paths["/api/v1/runs"]["post"]  # type: ignore[index]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateRun"}
    ok = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Run"}
    logs = paths["/api/v1/runs/{run_id}/logs"]["get"]["responses"]["200"]["content"]  # type: ignore[index]
    assert set(logs) == {"application/json", "text/event-stream"}


def test_openapi_command_prints_the_document() -> None:
    result = CliRunner().invoke(build_cli(), ["openapi"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["info"]["title"] == "flwd"
    assert "/api/v1/runs" in doc["paths"]
