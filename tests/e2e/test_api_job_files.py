"""Issue 10 over HTTP: files of the job folder, large arguments, short validation errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

MAIN = """\
import json, os
rows = open(os.path.join(os.environ["FLWD_JOB_DIR"], "data.csv")).read().split()
with open(os.environ["FLWD_RESULT_FILE"], "w") as out:
    json.dump({"rows": rows}, out)
"""
READ = """\
import json, os
n = len(json.load(open(os.environ["FLWD_ARGS_FILE"]))["blob"])
print("env", "FLWD_ARG_BLOB" in os.environ)
json.dump({"length": n}, open(os.environ["FLWD_RESULT_FILE"], "w"))
"""
JOBS = {
    "relative": {"command": "python3 main.py"},
    "right": {"command": 'python3 "$FLWD_JOB_DIR/main.py"'},
    "big": {
        "args": {
            "type": "object",
            "properties": {"blob": {"type": "string", "maxLength": 300000}},
        },
        "steps": [{"id": "read", "script": "read.py"}],
    },
}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("flwd-job-files")
    for job_id, config in JOBS.items():
        folder = tmp / "jobs" / job_id
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps(config))
        if job_id == "big":
            (folder / "read.py").write_text(READ)
        else:
            (folder / "main.py").write_text(MAIN)
            (folder / "data.csv").write_text("a,1\nb,2\n")
    server = ServerProcess(Path(tmp))
    server.start()
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


def run_sync(http: httpx.Client, job_id: str, **args: object) -> dict[str, object]:
    response = http.post("/runs", json={"job_id": job_id, "args": args, "async": False})
    assert response.status_code in (200, 201), response.text
    run: dict[str, object] = response.json()
    return run


def test_a_command_naming_a_job_file_relatively_fails_with_the_hint(http: httpx.Client) -> None:
    run = run_sync(http, "relative")
    assert run["status"] == "failed"
    error = str(run["error"])
    assert "'main.py' is a file of the job folder, but steps run in $FLWD_RUN_DIR" in error
    assert 'write "$FLWD_JOB_DIR/main.py"' in error


def test_a_job_reaches_its_files_through_flwd_job_dir(http: httpx.Client) -> None:
    run = run_sync(http, "right")
    assert run["status"] == "success", run
    assert run["result"]["value"] == {"rows": ["a,1", "b,2"]}  # type: ignore[index]


def test_a_200_kb_argument_reaches_the_step_through_the_args_file(http: httpx.Client) -> None:
    run = run_sync(http, "big", blob="b" * 200_000)
    assert run["status"] == "success", run
    assert run["result"]["value"] == {"length": 200_000}  # type: ignore[index]
    logs = http.get(f"/runs/{run['run_id']}/logs").json()["logs"]
    messages = [(line["level"], line["message"]) for line in logs]
    assert ("info", "env False") in messages
    warnings = [m for level, m in messages if level == "warning"]
    assert len(warnings) == 1 and "FLWD_ARG_BLOB left out of the environment" in warnings[0]


def test_a_huge_invalid_value_gets_a_short_error(http: httpx.Client) -> None:
    response = http.post("/runs", json={"job_id": "big", "args": {"blob": "c" * 400_000}})
    assert response.status_code == 400
    assert len(response.content) < 2_000
    (error,) = response.json()["errors"]
    assert error["path"].endswith("/blob") and error["message"].endswith("is too long")
