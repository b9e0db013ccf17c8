"""Schema-driven fuzzing: requests generated from the app's own OpenAPI document (valid
and invalid parameters and bodies, odd methods and paths) never get a 500 and every error
body is a problem document. Runs the real registry and run service in-process."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from flwd.app import create_app
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings

# Streams that never end by themselves cannot be fuzzed with a buffering client.
ENDLESS = {("get", "/api/v1/events/runs"), ("get", "/api/v1/events/jobs")}
JOB_IDS = ["noop", "tools/echo", "missing", ""]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    root = tmp_path_factory.mktemp("fuzz")
    for job_id, command in (("noop", "true"), ("tools/echo", "echo $FLWD_ARG_TEXT")):
        folder = root / "jobs" / job_id
        folder.mkdir(parents=True)
        config = {"command": command}
        if job_id == "tools/echo":
            config["args"] = {"type": "object", "properties": {"text": {"type": "string"}}}
        (folder / "config.yaml").write_text(json.dumps(config))
    app_settings = Settings(
        sources=(JobSource(name="local-fs", path=str(root / "jobs")),),
        data_dir=str(root / "data"),
        kill_grace=1.0,
        max_body_bytes=4096,
        watch=False,
    )
    app = create_app(app_settings, make_plugin_manager(load_entrypoints=False))
    with TestClient(
        app=app, base_url="http://127.0.0.1", raise_server_exceptions=False, timeout=10
    ) as client:
        yield client


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    app = create_app(Settings(), make_plugin_manager(load_entrypoints=False))
    paths = app.openapi_schema.to_schema()["paths"]
    return [
        (method, path, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if (method, path) not in ENDLESS
    ]


OPERATIONS = _operations()


#: Values that once reached SQLite or int() unchecked: past int64, non-ASCII digits.
HOSTILE_NUMBERS = st.sampled_from(
    ["9223372036854775808", "99999999999999999999999", "12345678901234567890123", "²", "٣", "1e3"]
) | st.integers(min_value=2**63 - 3, max_value=10**30)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


#: Nesting from just inside the limit (64) to far past Python's recursion limit.
deep_json = st.integers(min_value=60, max_value=1200).map(_nested)


def _value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kinds = [s.get("type") for s in schema.get("oneOf", [schema])]
    options: list[st.SearchStrategy[Any]] = [st.text(max_size=12), HOSTILE_NUMBERS]
    if "integer" in kinds:
        options.append(st.integers(min_value=-5, max_value=2000))
    if "boolean" in kinds:
        options.append(st.sampled_from(["true", "false", "1", "maybe"]))
    if "enum" in schema or any("$ref" in s for s in schema.get("oneOf", [])):
        options.append(st.sampled_from(["pending", "running", "success", "failed", "nope"]))
    return st.one_of(options)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, str], bytes | None]:
    method, path, operation = draw(st.sampled_from(OPERATIONS))
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    for param in operation.get("parameters", []):
        value = draw(_value_for(param.get("schema", {})))
        if param["in"] == "path":
            value = draw(st.sampled_from([str(value), "noop", "tools/echo", "run_0"]))
            safe = "/" if param["name"] == "job_id" else ""
            path = path.replace("{" + param["name"] + "}", quote(str(value), safe=safe) or "x")
        elif param["in"] == "query" and draw(st.booleans()):
            params[param["name"]] = str(value)
        elif param["in"] == "header" and draw(st.booleans()):
            headers[param["name"]] = "".join(c for c in str(value) if 32 <= ord(c) < 127)
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["get", "post", "put", "delete", "patch"]))
    body: bytes | None = None
    if method in ("post", "put", "patch"):
        shaped = st.fixed_dictionaries(
            {"job_id": st.sampled_from(JOB_IDS) | st.text(max_size=8)},
            optional={
                "args": json_values | st.dictionaries(st.just("deep"), deep_json, max_size=1),
                "async": st.booleans() | json_values,
                "tenant": st.text(max_size=8) | st.text(min_size=60, max_size=200),
            },
        )
        document = draw(shaped | json_values | deep_json)
        body = json.dumps(document).encode()
        if draw(st.integers(0, 9)) == 0:
            body = draw(st.binary(max_size=64))
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/json", "text/plain"])
        )
    return method.upper(), path, params, headers, body


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_request_gets_a_500_or_a_non_problem_error(
    fuzz_client: TestClient[Litestar],
    request: tuple[str, str, dict[str, str], dict[str, str], bytes | None],
) -> None:
    method, path, params, headers, body = request
    response = fuzz_client.request(method, path, params=params, headers=headers, content=body)
    assert response.status_code < 500, (request, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["type"].startswith("https://flowd.org/problems/")
        assert problem["instance"].startswith("/api/")
        assert {"title", "detail"} <= set(problem)


def test_the_fuzzed_operations_cover_the_api() -> None:
    covered = {(m, p) for m, p, _ in OPERATIONS}
    assert ("post", "/api/v1/runs") in covered
    assert ("get", "/api/v1/artifacts/{artifact_id}") in covered
    assert pathlib.PurePosixPath("/api/v1").name == "v1"


#: The inputs issue 9 found answered with a 500 (and a 138 KB traceback in the log).
REPORTED = [
    (
        "POST",
        "/api/v1/runs",
        {},
        {},
        b'{"job_id": "noop", "args": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}",
    ),
    ("GET", "/api/v1/runs", {"offset": "9223372036854775808"}, {}, None),
    ("GET", "/api/v1/runs", {"tenant": "x" * 65}, {}, None),
    ("GET", "/api/v1/runs", {"tenant": "a/b"}, {}, None),
    ("POST", "/api/v1/runs", {}, {}, b'{"job_id": "noop", "tenant": "bad tenant!"}'),
    ("GET", "/api/v1/runs/{run}/logs", {"since": "99999999999999999999999"}, {}, None),
    ("GET", "/api/v1/runs/{run}/logs", {"since": "\u00b2"}, {}, None),
    ("GET", "/api/v1/runs/{run}/events", {}, {"Last-Event-ID": "1" * 23}, None),
    ("GET", "/api/v1/runs/{run}/logs", {"follow": "true"}, {"Last-Event-ID": "1" * 23}, None),
    ("GET", "/api/v1/events/runs", {"since": "99999999999999999999999"}, {}, None),
]


@pytest.mark.parametrize(("method", "path", "params", "headers", "body"), REPORTED)
def test_reported_malformed_inputs_are_400_problems(
    fuzz_client: TestClient[Litestar],
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    body: bytes | None,
) -> None:
    created = fuzz_client.post("/api/v1/runs", json={"job_id": "noop", "async": False})
    assert created.status_code == 201, created.text
    path = path.replace("{run}", created.json()["run_id"])
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    response = fuzz_client.request(method, path, params=params, headers=headers, content=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].rsplit("/", 1)[1] in ("validation-error", "malformed-request")
