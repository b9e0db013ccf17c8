"""The security extension end to end: a real `flwd serve` under the `secure` profile (and
custom ones), driven over HTTP and through the `flwd` CLI.

These need the core to call the extension's hooks (the access middleware, `configure_app`,
`register_routes`, `startup`, `validate_job`): they pass once that wiring is merged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

DEADLINE = 10.0


def flwd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flwd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_job(server: ServerProcess, job_id: str, config: dict[str, object]) -> None:
    folder = server.jobs / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def secure() -> Iterator[ServerProcess]:
    # under `secure` each run's steps run as a user of their own, who must be able to
    # search every directory above the data dir: pytest's own temporary dirs are 0700
    root = Path(tempfile.mkdtemp(prefix="flwd-secure-test-", dir="/tmp"))
    root.chmod(0o711)
    server = ServerProcess(root, FLWD_PROFILE="secure")
    add_job(server, "strict", {"command": "true", "security_profile": "secure"})
    add_job(server, "escalates", {"command": "true", "security_profile": "permissive"})
    add_job(server, "unknown-profile", {"command": "true", "security_profile": "nope"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(secure: ServerProcess) -> str:
    return (secure.data / "admin-token").read_text().strip()


def make_token(server: ServerProcess, *args: str) -> str:
    done = flwd("token", "create", "--data-dir", str(server.data), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_status(client: httpx.Client, path: str, token: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = client.get(path, headers=bearer(token))
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_first_start_writes_the_admin_token_and_names_it(secure: ServerProcess, admin: str) -> None:
    token_file = secure.data / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert admin.startswith("flwd_")
    info = json.loads((secure.data / "server.json").read_text())
    assert info["token_file"] == str(token_file)
    log = secure.log.read_text()
    assert str(token_file) in log and admin not in log


def test_missing_or_bad_token_is_401_and_open_routes_stay_open(secure: ServerProcess) -> None:
    with secure.client() as client:
        for headers in ({}, bearer("flwd_not-a-token"), {"Authorization": "Basic eDp5"}):
            answer = client.get("/jobs", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert answer.json()["type"].endswith("/unauthorized")
        stream = client.get("/events/runs", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 401
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        schema = httpx.get(secure.url + "/api/docs/openapi.json", timeout=10).json()
        assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert httpx.get(secure.url + "/", timeout=10).status_code in (200, 307)


def test_scopes_are_checked_on_every_route(secure: ServerProcess) -> None:
    reader = make_token(secure, "--name", "reader", "--scopes", "jobs:read,runs:read")
    with secure.client(headers=bearer(reader)) as client:
        assert client.get("/jobs").status_code == 200
        assert client.get("/runs").status_code == 200
        assert client.get("/system/info").status_code == 200
        refused = client.post("/runs", json={"job_id": "noop"})
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/permission-denied")
        assert client.get("/tokens").status_code == 403
        assert client.get("/audit").status_code == 403
        assert client.get("/artifacts").status_code == 403


def test_token_commands_go_through_the_running_server(secure: ServerProcess, admin: str) -> None:
    token = make_token(secure, "--name", "via-server", "--scopes", "runs:read", "--expires", "30d")
    listing = flwd("token", "list", "--data-dir", str(secure.data), "--json")
    assert listing.returncode == 0, listing.stderr
    names = {t["name"]: t for t in json.loads(listing.stdout)["tokens"]}
    assert names["via-server"]["state"] == "active" and token not in listing.stdout
    with secure.client() as client:
        assert client.get("/runs", headers=bearer(token)).status_code == 200
        revoked = flwd("token", "revoke", "via-server", "--data-dir", str(secure.data))
        assert revoked.returncode == 0, revoked.stderr
        # refused at once (the server revoked it itself); well within the one second
        assert client.get("/runs", headers=bearer(token)).status_code == 401
    # the remote form: --server and --token
    remote = flwd("token", "list", "--server", secure.url, env={"FLWD_TOKEN": admin})
    assert remote.returncode == 0 and "via-server" in remote.stdout
    refused = flwd("--token", "flwd_wrong", "token", "list", "--server", secure.url)
    assert refused.returncode != 0 and "error:" in refused.stderr


def test_expired_token_is_refused(secure: ServerProcess) -> None:
    token = make_token(secure, "--name", "brief", "--scopes", "runs:read", "--expires", "1s")
    with secure.client() as client:
        assert wait_status(client, "/runs", token, 401).status_code == 401


def test_only_hashes_are_stored(secure: ServerProcess) -> None:
    token = make_token(secure, "--name", "hashed", "--scopes", "runs:read")
    stored = b"".join(p.read_bytes() for p in secure.data.glob("security.sqlite3*"))
    assert stored and token.encode() not in stored
    assert (secure.data / "security.sqlite3").stat().st_mode & 0o777 == 0o600


def test_local_cli_uses_the_token_file(secure: ServerProcess) -> None:
    done = flwd("runs", "--data-dir", str(secure.data))
    assert done.returncode == 0, done.stderr


def test_tenants_and_job_patterns(secure: ServerProcess, admin: str) -> None:
    acme = make_token(
        secure, "--name", "acme", "--scopes", "runs:read,runs:write", "--tenant", "acme"
    )
    backup = make_token(
        secure, "--name", "demo-only", "--scopes", "runs:read,runs:write", "--job-pattern", "demo/*"
    )
    with secure.client() as client:
        mine = client.post("/runs", json={"job_id": "noop", "tenant": "acme"}, headers=bearer(acme))
        assert mine.status_code == 201, mine.text
        assert mine.json()["tenant"] == "acme"
        other = client.post(
            "/runs", json={"job_id": "noop", "tenant": "beta"}, headers=bearer(acme)
        )
        assert other.status_code == 403
        theirs = client.post("/runs", json={"job_id": "noop"}, headers=bearer(admin))
        assert theirs.status_code == 201
        run_id = theirs.json()["run_id"]
        assert client.get(f"/runs/{run_id}", headers=bearer(acme)).status_code == 404
        listed = client.get("/runs", headers=bearer(acme)).json()
        assert run_id not in {r["run_id"] for r in listed["runs"]}
        wrong_job = client.post("/runs", json={"job_id": "noop"}, headers=bearer(backup))
        # the core hides jobs outside the token's patterns: 404 like a missing job
        assert wrong_job.status_code in (403, 404), wrong_job.text
        assert "run_id" not in wrong_job.json()
        right_job = client.post(
            "/runs", json={"job_id": "demo/ticker", "args": {"count": 1}}, headers=bearer(backup)
        )
        assert right_job.status_code == 201, right_job.text


def test_audit_records_runs_tokens_and_refusals(secure: ServerProcess, admin: str) -> None:
    writer = make_token(secure, "--name", "writer", "--scopes", "runs:read,runs:write")
    with secure.client() as client:
        run = client.post("/runs", json={"job_id": "demo/sleeper"}, headers=bearer(writer))
        assert run.status_code == 201
        run_id = run.json()["run_id"]
        assert client.post(f"/runs/{run_id}/cancel", headers=bearer(writer)).status_code == 200
        client.get("/jobs", headers=bearer("flwd_bogus"))
        page = client.get("/audit", params={"actor": "writer"}, headers=bearer(admin)).json()
        seen = {(e["action"], e["target"]) for e in page["entries"]}
        assert {("run.create", run_id), ("run.cancel", run_id)} <= seen
        refused = client.get("/audit", params={"action": "auth.refused"}, headers=bearer(admin))
        assert any("unknown token" in e["detail"] for e in refused.json()["entries"])
        made = client.get("/audit", params={"action": "token.create"}, headers=bearer(admin))
        assert "writer" in {e["target"] for e in made.json()["entries"]}
    printed = flwd("audit", "--data-dir", str(secure.data), "--actor", "writer")
    assert printed.returncode == 0 and f"run.cancel {run_id}" in printed.stdout


def test_job_profile_may_only_tighten(secure: ServerProcess, admin: str) -> None:
    with secure.client(headers=bearer(admin)) as client:
        listing = client.get("/jobs").json()
    assert "strict" in {j["id"] for j in listing["jobs"]}
    invalid = {b["id"]: b for b in listing["invalid"]}
    assert "looser than the server's 'secure'" in json.dumps(invalid["escalates"])
    assert "not a known profile" in json.dumps(invalid["unknown-profile"])
    checked = flwd("validate", "--profile", "secure", str(secure.jobs))
    assert checked.returncode == 1 and "looser" in checked.stdout
    relaxed = flwd("validate", "--profile", "permissive", str(secure.jobs / "escalates"))
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr


def test_rate_limit_answers_429(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "tight.yaml").write_text(
        "name: tight\nrate_limit: {per_token: 5/minute, anonymous: 3/minute}\n"
    )
    server = ServerProcess(tmp_path, FLWD_PROFILE="tight", FLWD_PROFILES_DIR=str(profiles))
    server.start()
    try:
        token = (server.data / "admin-token").read_text().strip()
        with server.client(headers=bearer(token)) as client:
            answers = [client.get("/jobs") for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers[:5]] == [
            "4",
            "3",
            "2",
            "1",
            "0",
        ]
        assert all(a.headers["X-RateLimit-Limit"] == "5" for a in answers)
        last = answers[-1]
        assert int(last.headers["Retry-After"]) >= 1
        assert last.json()["type"].endswith("/too-many-requests")
    finally:
        server.stop()


def test_unknown_or_broken_profile_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    unknown = flwd(
        "serve",
        "--port",
        "0",
        "--profile",
        "nonexistent",
        "--data-dir",
        str(tmp_path / "d"),
        cwd=tmp_path,
    )
    assert unknown.returncode == 1
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown security profile 'nonexistent'" in lines[0]
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "broken.yaml").write_text("steps: {network: moon}\n")
    broken = flwd(
        "serve",
        "--port",
        "0",
        "--profile",
        "broken",
        "--data-dir",
        str(tmp_path / "d"),
        cwd=tmp_path,
    )
    assert broken.returncode == 1
    lines = broken.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.yaml" in lines[0]


def test_disabled_profile_refuses_a_public_address(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    done = flwd(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--profile",
        "disabled",
        "--data-dir",
        str(tmp_path / "d"),
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "loopback" in done.stderr
