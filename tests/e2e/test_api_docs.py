"""The docs stay true: every problem slug is documented, and the curl examples of
docs/api.md and docs/events.md run against a real server (translated to httpx from the
very text of the docs, so no curl binary is needed)."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import httpx
import pytest

from flwd.api.problems import PROBLEM_TYPES
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e
DOCS = Path(__file__).resolve().parents[2] / "docs"
STREAM_LIMIT = 20.0


def test_every_problem_slug_is_documented() -> None:
    text = (DOCS / "problems.md").read_text()
    documented = set(re.findall(r"^## `([a-z-]+)`$", text, re.MULTILINE))
    assert documented == set(PROBLEM_TYPES)
    for slug, kind in PROBLEM_TYPES.items():
        assert f'"type": "https://flowd.org/problems/{slug}"' in text
        assert f'"status": {kind.status}' in text


def curl_examples(name: str) -> list[str]:
    """Every `curl` command in the ```sh blocks of a doc, continuation lines joined."""
    text = (DOCS / name).read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        joined = block.replace("\\\n", " ")
        commands += [
            line.strip() for line in joined.splitlines() if line.strip().startswith("curl")
        ]
    return commands


class CurlRunner:
    """Runs a curl command line with httpx; remembers the last created run's id."""

    def __init__(self, server: ServerProcess, http: httpx.Client, artifact_id: str) -> None:
        self.server = server
        self.http = http
        self.vars = {"ARTIFACT_ID": artifact_id, "RUN_ID": ""}

    def run(self, command: str) -> httpx.Response:
        words = shlex.split(command)
        assert words[0] == "curl"
        method, headers, body, url, stream, max_time = "GET", {}, None, None, False, STREAM_LIMIT
        args = iter(words[1:])
        for word in args:
            if word == "-X":
                method = next(args)
            elif word == "-H":
                name, _, value = next(args).partition(":")
                headers[name.strip()] = value.strip()
            elif word == "-d":
                body = next(args).encode()
                method = "POST" if method == "GET" else method
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            elif word == "--max-time":
                max_time = float(next(args))
            elif word == "-N":
                stream = True
            elif word in ("-s", "-i", "-OJ"):
                continue
            else:
                assert word.startswith("http://localhost:8080/"), f"unknown curl word {word!r}"
                url = word
        assert url is not None
        for name, value in self.vars.items():
            url = url.replace(f"${name}", value)
        url = url.replace("http://localhost:8080", self.server.url)
        if stream:
            return self._stream(method, url, headers, max_time)
        response = self.http.request(method, url, headers=headers, content=body)
        if method == "POST" and response.status_code == 201:
            self.vars["RUN_ID"] = response.json()["run_id"]
        return response

    def _stream(
        self, method: str, url: str, headers: dict[str, str], limit: float
    ) -> httpx.Response:
        chunks: list[str] = []
        deadline = time.monotonic() + limit
        try:
            with self.http.stream(method, url, headers=headers, timeout=limit) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    chunks.append(line)
                    if time.monotonic() > deadline:
                        break
        except httpx.ReadTimeout:
            pass  # `--max-time` on an endless stream: what curl does too
        return httpx.Response(response.status_code, text="\n".join(chunks))


@pytest.mark.parametrize("doc", ["api.md", "events.md"])
def test_curl_examples_run(doc: str, api_server: ServerProcess, api_http: httpx.Client) -> None:
    report = api_http.post("/runs", json={"job_id": "report", "async": False}).json()
    [artifact] = api_http.get("/artifacts", params={"run_id": report["run_id"]}).json()["artifacts"]
    runner = CurlRunner(api_server, api_http, artifact["id"])
    commands = curl_examples(doc)
    assert len(commands) >= 5
    for command in commands:
        response = runner.run(command)
        allowed = {409} if command.rstrip().endswith("/cancel") else set()
        assert response.status_code < 400 or response.status_code in allowed, (
            command,
            response.text,
        )
        if "follow=true" in command:
            assert "event: end" in response.text, response.text
        if command.endswith("/events") or "Last-Event-ID" in command:
            assert "event: run.finished" in response.text, response.text
