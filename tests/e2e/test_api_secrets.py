"""Secrets of every shape through a real `flwd serve`: an array, an object with a secret
inside declared through `$ref`, a number that is also the job's result. Every response,
SSE stream, the data dir (database and WAL) and the server's log are searched for them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import read_frames

pytestmark = pytest.mark.e2e

TOKENS = ["tokA-111", "tokB-222"]
API_KEY = 'k3y-"quoted"-\\-é'
PIN = 482913

ARGS = {
    "type": "object",
    "$defs": {"key": {"type": "string", "format": "secret", "minLength": 4}},
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string", "writeOnly": True}},
        "service": {
            "type": "object",
            "properties": {"url": {"type": "string"}, "key": {"$ref": "#/$defs/key"}},
        },
        "pin": {"type": "integer", "format": "secret"},
    },
}
SCRIPT = """\
#!/bin/bash
echo "tokens=$FLWD_ARG_TOKENS service=$FLWD_ARG_SERVICE pin=$FLWD_ARG_PIN"
cat "$FLWD_ARGS_FILE"; echo
python3 - <<'EOF'
import json, os, sys
args = json.load(open(os.environ["FLWD_ARGS_FILE"]))
for form in (json.dumps(args), json.dumps(args, separators=(",", ":"), ensure_ascii=False)):
    print(form)
    print(form, file=sys.stderr)
for token in args["tokens"]:
    print("token", token)
print("key", args["service"]["key"], json.dumps(args["service"]["key"]))
json.dump({"n": args["pin"], "tokens": args["tokens"], "key": args["service"]["key"],
           "url": args["service"]["url"]}, open(os.environ["FLWD_RESULT_FILE"], "w"))
EOF
"""


def needles() -> list[bytes]:
    forms = {*TOKENS, API_KEY, str(PIN)}
    forms |= {json.dumps(API_KEY)[1:-1], json.dumps(API_KEY, ensure_ascii=False)[1:-1]}
    forms |= {json.dumps(TOKENS), json.dumps(TOKENS, separators=(",", ":"))}
    return sorted(form.encode() for form in forms)


def _wait(http: httpx.Client, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = http.get(f"/runs/{run_id}").json()
        if run["status"] in ("success", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} not terminal after {timeout}s")


def test_secrets_of_every_shape_never_leave_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "shapes"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        json.dumps(
            {
                "args": ARGS,
                "result_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "steps": [{"id": "main", "script": "main.sh"}],
            }
        )
    )
    (folder / "main.sh").write_text(SCRIPT)
    (folder / "main.sh").chmod(0o755)
    server = ServerProcess(tmp_path)
    server.start()
    seen: list[bytes] = []
    try:
        with server.client() as http:
            detail = http.get("/jobs/shapes")
            assert detail.json()["secret_args"] == ["/pin", "/service/key", "/tokens"]
            args = {"tokens": TOKENS, "service": {"url": "https://x.test", "key": API_KEY}}
            created = http.post(
                "/runs", json={"job_id": "shapes", "args": {**args, "pin": PIN}, "async": False}
            )
            assert created.status_code == 201, created.text
            run_id = created.json()["run_id"]
            run = _wait(http, run_id)
            # the case: the secret number is the result; masked, not a failure
            assert run["status"] == "success", run
            assert run["args"] == {
                "tokens": "***",
                "service": {"url": "https://x.test", "key": "***"},
                "pin": "***",
            }
            assert run["result"]["value"] == {
                "n": "***",
                "tokens": ["***", "***"],
                "key": "***",
                "url": "https://x.test",
            }
            seen.append(created.content)
            for path in (
                f"/runs/{run_id}",
                f"/runs/{run_id}/steps",
                f"/runs/{run_id}/logs",
                "/runs",
                "/artifacts",
            ):
                response = http.get(path)
                assert response.status_code == 200, response.text
                seen.append(response.content)
            logs = http.get(f"/runs/{run_id}/logs").json()["logs"]
            assert "token ***" in [line["message"] for line in logs]
            for path in (
                f"/runs/{run_id}/events",
                f"/runs/{run_id}/logs?follow=true",
                f"/events/runs?run_id={run_id}&since=0",
            ):
                frames = read_frames(
                    http, path, stop=lambda f: f["event"] in ("run.finished", "end")
                )
                seen.append(json.dumps(frames, ensure_ascii=False).encode())
                seen.append(json.dumps(frames).encode())
            # a validation error about a secret does not quote it either
            bad = http.post("/runs", json={"job_id": "shapes", "args": {**args, "pin": "tokA-111"}})
            assert bad.status_code == 400
            seen.append(bad.content)
    finally:
        server.stop()
    everything = b"".join(seen)
    assert [n for n in needles() if n in everything] == []
    for path in sorted(server.data.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes() + str(path).encode()
            assert [n for n in needles() if n in data] == [], path
    log = server.log.read_bytes()
    assert b"shapes" in log or log  # the log was written
    assert [n for n in needles() if n in log] == []
