"""The extension in a Litestar app as the core wires it: rate limits and their headers,
the admin routes for tokens and the audit, the audit of run actions, the OpenAPI scheme,
and start-up refusals (unknown profile, `disabled` on a non-loopback address)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flwd_security.runtime import current
from litestar import Litestar
from litestar.testing import TestClient

from flwd.cli import CliError
from tests.security.support import admin_token, security_app, settings_for


def write_profile(tmp_path: Path, text: str, name: str = "tight") -> None:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)


def client_with(tmp_path: Path, per_token: str) -> TestClient[Litestar]:
    write_profile(
        tmp_path,
        "name: tight\nauth: {required: true}\n"
        f"rate_limit: {{per_token: {per_token}, anonymous: 2/minute}}\n",
    )
    settings = settings_for(tmp_path, "tight")
    return TestClient(security_app(settings), base_url="http://127.0.0.1")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    with client_with(tmp_path, "1000/minute") as test_client:
        yield test_client


@pytest.fixture
def tight_client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    with client_with(tmp_path, "5/minute") as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_first_start_writes_the_admin_token_0600(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with TestClient(security_app(settings), base_url="http://127.0.0.1"):
        path = settings.data_path / "admin-token"
        assert path.stat().st_mode & 0o777 == 0o600
        token = admin_token(settings)
        security = current()
        assert security is not None and security.open().check(token).scopes == {"admin"}
    with TestClient(security_app(settings), base_url="http://127.0.0.1"):
        assert admin_token(settings) == token  # a second start keeps it


def test_rate_limit_per_token_with_headers_and_429(tight_client: TestClient[Litestar]) -> None:
    client = tight_client
    token = admin_token(current().settings)  # type: ignore[union-attr]
    seen = []
    for _ in range(5):
        answer = client.get("/api/v1/things", headers=bearer(token))
        assert answer.status_code == 200
        assert answer.headers["X-RateLimit-Limit"] == "5"
        assert int(answer.headers["X-RateLimit-Reset"]) > 1_000_000_000
        seen.append(int(answer.headers["X-RateLimit-Remaining"]))
    assert seen == [4, 3, 2, 1, 0]
    refused = client.get("/api/v1/things", headers=bearer(token))
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/too-many-requests")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # anonymous callers count per address, on their own limit; open routes are not counted
    for _ in range(5):
        assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/things").headers["X-RateLimit-Limit"] == "2"


def test_token_routes_create_list_revoke(client: TestClient[Litestar]) -> None:
    admin = bearer(admin_token(current().settings))  # type: ignore[union-attr]
    made = client.post(
        "/api/v1/tokens",
        json={"name": "ci", "scopes": "runs:read,runs:write", "tenant": "acme", "expires": "30d"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    token = body["token"]
    assert token.startswith("flwd_") and body["details"]["tenant"] == "acme"
    listing = client.get("/api/v1/tokens", headers=admin)
    assert listing.status_code == 200
    assert token not in listing.text
    assert {t["name"]: t["state"] for t in listing.json()["tokens"]} == {
        "admin": "active",
        "ci": "active",
    }
    bad = client.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert bad.status_code == 400 and "unknown scope" in bad.json()["detail"]
    gone = client.delete("/api/v1/tokens/ci", headers=admin)
    assert gone.status_code == 200 and gone.json()["state"] == "revoked"
    assert client.delete("/api/v1/tokens/nobody", headers=admin).status_code == 404
    # a revoked token is refused at once: the next request counts as anonymous
    assert client.get("/api/v1/things", headers=bearer(token)).headers["X-RateLimit-Limit"] == "2"


def test_audit_of_run_and_token_actions_filtered_and_paged(
    client: TestClient[Litestar],
) -> None:
    admin = bearer(admin_token(current().settings))  # type: ignore[union-attr]
    assert client.post("/api/v1/runs", headers=admin).status_code == 201
    client.post("/api/v1/tokens", json={"name": "t1", "scopes": ["admin"]}, headers=admin)
    client.delete("/api/v1/tokens/t1", headers=admin)
    page = client.get("/api/v1/audit", params={"actor": "admin"}, headers=admin).json()
    actions = [(e["action"], e["target"]) for e in page["entries"]]
    assert actions == [("token.revoke", "t1"), ("token.create", "t1"), ("run.create", "r-1")]
    assert page["entries"][2]["address"] == "testclient"
    first = client.get("/api/v1/audit", params={"limit": 2}, headers=admin).json()
    assert len(first["entries"]) == 2 and first["next_cursor"] is not None
    rest = client.get(
        "/api/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
    ).json()
    assert rest["entries"] and rest["entries"][0]["id"] < first["entries"][-1]["id"]
    only = client.get("/api/v1/audit", params={"action": "run.create"}, headers=admin).json()
    assert [e["target"] for e in only["entries"]] == ["r-1"]
    later = client.get(
        "/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin
    ).json()
    assert later["entries"] == []


def test_openapi_declares_the_bearer_scheme(client: TestClient[Litestar]) -> None:
    schema = client.app.openapi_schema.to_schema()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert schema["security"] == [{"bearerAuth": []}]


def test_unknown_profile_and_disabled_on_public_address_refuse_to_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(CliError) as unknown:
        security_app(settings_for(tmp_path, "nonexistent"))
    assert unknown.value.exit_code == 1 and "unknown security profile" in unknown.value.message
    with pytest.raises(CliError) as public:
        security_app(settings_for(tmp_path, "disabled", host="0.0.0.0"))
    assert public.value.exit_code == 1 and "loopback" in public.value.message
    security_app(settings_for(tmp_path, "disabled", host="::1"))
