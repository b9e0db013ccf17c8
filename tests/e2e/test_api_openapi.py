"""The API documentation as a real server serves it: the Swagger UI page loads every asset
from flwd itself (no CDN), and the OpenAPI document carries realistic examples that
validate against their own schemas, plus links from `POST /runs` to the run's routes."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
from ulid import ULID

from flwd.states import RunStatus
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


class AssetRefs(HTMLParser):
    """Every `<script src>` and `<link href>` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.refs.append((tag, str(found["src"])))
        if tag == "link" and found.get("href"):
            self.refs.append((f"link rel={found.get('rel')}", str(found["href"])))


EXPECTED_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def test_swagger_ui_assets_are_served_by_flwd(api_server: ServerProcess) -> None:
    with httpx.Client(base_url=api_server.url, timeout=30.0) as http:
        page = http.get("/api/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        parser = AssetRefs()
        parser.feed(page.text)
        refs = parser.refs
        kinds = {kind for kind, _ in refs}
        assert "script" in kinds and "link rel=stylesheet" in kinds, refs
        assert len([r for r in refs if r[0] == "script"]) == 2, refs
        for _, ref in refs:
            parts = urlsplit(ref)
            # same origin: a path, no scheme or host (so nothing loads from the internet)
            assert not parts.scheme and not parts.netloc, ref
            assert ref.startswith("/api/docs/assets/"), ref
            asset = http.get(ref)
            assert asset.status_code == 200, ref
            suffix = ref[ref.rfind(".") :]
            media = asset.headers["content-type"].split(";")[0].strip()
            assert media in EXPECTED_TYPES[suffix], (ref, media)
            assert len(asset.content) > 500, ref
            if suffix == ".js":
                assert b"SwaggerUI" in asset.content
        # the page's script uses what the bundle defines
        assert "SwaggerUIBundle(" in page.text
        assert http.get("/api/docs/assets/no-such-file.js").status_code == 404


RUN_LINK_TARGETS = {
    "getRun": ("/api/v1/runs/{run_id}", "get", "path"),
    "listSteps": ("/api/v1/runs/{run_id}/steps", "get", "path"),
    "getRunLogs": ("/api/v1/runs/{run_id}/logs", "get", "path"),
    "streamRunEvents": ("/api/v1/runs/{run_id}/events", "get", "path"),
    "cancelRun": ("/api/v1/runs/{run_id}/cancel", "post", "path"),
    "listArtifacts": ("/api/v1/artifacts", "get", "query"),
}
#: The JSON success bodies that must carry an example: (path, method, status).
MAIN_BODIES = {
    "listJobs": ("/api/v1/jobs", "get", "200"),
    "getJob": ("/api/v1/jobs/{job_id}", "get", "200"),
    "createRun": ("/api/v1/runs", "post", "201"),
    "listRuns": ("/api/v1/runs", "get", "200"),
    "getRun": ("/api/v1/runs/{run_id}", "get", "200"),
    "cancelRun": ("/api/v1/runs/{run_id}/cancel", "post", "200"),
    "listSteps": ("/api/v1/runs/{run_id}/steps", "get", "200"),
    "getRunLogs": ("/api/v1/runs/{run_id}/logs", "get", "200"),
    "listArtifacts": ("/api/v1/artifacts", "get", "200"),
    "health": ("/api/v1/health", "get", "200"),
    "systemInfo": ("/api/v1/system/info", "get", "200"),
}
RUN_ID = re.compile(r"^run_[0-9A-HJKMNP-TV-Z]{26}$")


@pytest.fixture(scope="module")
def openapi_doc(api_server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(api_server.url + "/api/docs/openapi.json", timeout=30)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def test_create_run_links_to_the_runs_routes(openapi_doc: dict[str, Any]) -> None:
    paths = openapi_doc["paths"]
    created = paths["/api/v1/runs"]["post"]["responses"]["201"]
    links = created["links"]
    assert set(links) == set(RUN_LINK_TARGETS)
    run_schema = created["content"]["application/json"]["schema"]
    assert run_schema == {"$ref": "#/components/schemas/Run"}
    assert "run_id" in openapi_doc["components"]["schemas"]["Run"]["required"]
    for name, (path, method, where) in RUN_LINK_TARGETS.items():
        link = links[name]
        operation = paths[path][method]
        # the link names a real operation, and fills its run_id from the response body
        assert link["operationId"] == operation["operationId"] == name
        assert link["parameters"] == {"run_id": "$response.body#/run_id"}
        declared = {(p["name"], p["in"]) for p in operation.get("parameters", [])}
        assert ("run_id", where) in declared, (name, declared)
    restarted = paths["/api/v1/runs/{run_id}/restart"]["post"]["responses"]["201"]
    assert set(restarted["links"]) == set(RUN_LINK_TARGETS)


def _walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_examples_are_real_values_valid_for_their_schemas(openapi_doc: dict[str, Any]) -> None:
    # no example generated by Litestar (random words and dates) anywhere in the schemas
    for node in _walk(openapi_doc["components"]):
        if isinstance(node, dict):
            assert "examples" not in node and "example" not in node, node
    paths = openapi_doc["paths"]
    for operation_id, (path, method, status) in MAIN_BODIES.items():
        operation = paths[path][method]
        assert operation["operationId"] == operation_id
        body = operation["responses"][status]["content"]["application/json"]
        examples = body["examples"]
        assert examples, operation_id
        # validated against the document's own schema, $refs resolved in the document
        schema = {**body["schema"], "components": openapi_doc["components"]}
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        for example in examples.values():
            errors = list(validator.iter_errors(example["value"]))
            assert not errors, (operation_id, [e.message for e in errors])
    # the contract's story, with real identifiers
    run = paths["/api/v1/runs"]["post"]["responses"]["201"]["content"]["application/json"]
    created = next(iter(run["examples"].values()))["value"]
    assert created["job_id"] == "backup/daily"
    assert created["args"] == {"target": "/mnt/backup"}
    assert created["status"] == "pending"
    detail = paths["/api/v1/runs/{run_id}"]["get"]["responses"]["200"]["content"]
    finished = next(iter(detail["application/json"]["examples"].values()))["value"]
    assert finished["status"] in {s.value for s in RunStatus}
    assert finished["result"]["value"] == {"files_backed_up": 1234, "total_size_mb": 5678}
    example_values = [
        example["value"]
        for node in _walk(paths)
        if isinstance(node, dict) and isinstance(node.get("examples"), dict)
        for example in node["examples"].values()
        if isinstance(example, dict) and "value" in example
    ]
    stream_examples = [
        node["example"]
        for node in _walk(paths)
        if isinstance(node, dict) and isinstance(node.get("example"), str)
    ]
    run_ids = [
        node["run_id"]
        for node in _walk(example_values)
        if isinstance(node, dict) and isinstance(node.get("run_id"), str)
    ]
    assert len(run_ids) >= 8
    for run_id in run_ids:
        assert RUN_ID.match(run_id), run_id
        ULID.from_str(run_id.removeprefix("run_"))
    assert stream_examples
    for text in stream_examples:
        # SSE examples name a real run id too, not a placeholder
        assert "..." not in text
        for run_id in re.findall(r'"run_id":"([^"]*)"', text):
            assert RUN_ID.match(run_id), run_id
