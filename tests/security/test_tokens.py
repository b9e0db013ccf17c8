"""Tokens in the extension's store: made once, kept as hashes, refused when expired or
revoked; the actor and scopes a token stands for; the access hooks' answers."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from flwd_security import plugin
from flwd_security.runtime import install
from flwd_security.store import SecurityStore, token_hash
from flwd_security.tokens import (
    ACTION_SCOPES,
    TOKEN_PREFIX,
    TokenBook,
    TokenRefused,
    parse_scopes,
    scope_allows,
)
from litestar import Request

from flwd import access
from flwd.access import Resource
from flwd.errors import InvalidInput, Unauthorized
from tests.security.support import settings_for


@pytest.fixture
def book(tmp_path: Path) -> TokenBook:
    store = SecurityStore(tmp_path)
    yield TokenBook(store)
    store.close()


def test_token_is_shown_once_and_only_its_hash_is_stored(book: TokenBook, tmp_path: Path) -> None:
    token, record = book.create(name="ci", scopes=("runs:read",))
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert record.tenant == "default" and record.state() == "active"
    book.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("security.sqlite3*"))
    assert token.encode() not in raw
    assert token_hash(token).encode() in raw
    assert (tmp_path / "security.sqlite3").stat().st_mode & 0o777 == 0o600


def test_check_gives_the_actor_and_refuses_unknown(book: TokenBook) -> None:
    token, _ = book.create(
        name="acme-ci", scopes=("runs:write",), tenant="acme", job_patterns=("backup/*",)
    )
    actor = book.check(token)
    assert actor.name == "acme-ci" and actor.tenant == "acme"
    assert actor.job_patterns == ("backup/*",) and actor.scopes == {"runs:write"}
    admin, _ = book.create(name="root", scopes=("admin",), tenant="acme")
    assert book.check(admin).tenant is None  # admin tokens act on every tenant
    with pytest.raises(TokenRefused, match="unknown"):
        book.check(TOKEN_PREFIX + "nope")


def test_revoked_token_is_refused_at_once_in_process(book: TokenBook) -> None:
    token, _ = book.create(name="ci", scopes=("runs:read",))
    book.check(token)  # cached now
    book.revoke("ci")
    with pytest.raises(TokenRefused, match="revoked"):
        book.check(token)


def test_revoked_elsewhere_is_refused_once_the_cache_entry_ages(
    book: TokenBook, tmp_path: Path
) -> None:
    token, _ = book.create(name="ci", scopes=("runs:read",))
    book.check(token)
    other = SecurityStore(tmp_path)  # another process's connection: the CLI offline
    other.revoke_token("ci")
    other.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            book.check(token)
        except TokenRefused:
            break
        time.sleep(0.05)
    else:
        pytest.fail("a token revoked by another connection was still accepted after 5 s")


def test_expired_token_is_refused(book: TokenBook) -> None:
    token, record = book.create(name="short", scopes=("runs:read",), expires="1s")
    assert record.expires_at is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            book.check(token)
        except TokenRefused as exc:
            assert "expired" in exc.reason
            break
        time.sleep(0.05)
    else:
        pytest.fail("an expired token was still accepted")


def test_bad_input(book: TokenBook) -> None:
    with pytest.raises(InvalidInput, match="unknown scope"):
        parse_scopes("runs:read,root")
    with pytest.raises(InvalidInput, match="token name"):
        book.create(name="has space", scopes=("admin",))
    book.create(name="dup", scopes=("admin",))
    with pytest.raises(InvalidInput, match="exists"):
        book.create(name="dup", scopes=("admin",))
    with pytest.raises(InvalidInput, match="expires"):
        book.create(name="x", scopes=("admin",), expires="soon")


def test_one_scope_table_covers_every_action() -> None:
    assert set(ACTION_SCOPES) == set(access.ACTIONS)
    assert scope_allows(frozenset({"admin"}), access.CANCEL_RUN)
    assert scope_allows(frozenset({"runs:read"}), access.VIEW_RUNS)
    assert not scope_allows(frozenset({"runs:read"}), access.RUN_JOB)
    assert not scope_allows(frozenset({"jobs:read"}), access.ADMINISTER)


def _request(headers: dict[str, str]) -> Request[object, object, object]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/jobs",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "scheme": "http",
        "root_path": "",
        "app": None,
        "state": {},
    }
    return Request(scope)  # type: ignore[arg-type]


def test_actor_from_request_and_permission_allowed(tmp_path: Path) -> None:
    security = install(settings_for(tmp_path))
    try:
        token, _ = security.open().create(
            name="reader", scopes=("jobs:read", "runs:read"), job_patterns=("backup/*",)
        )
        with pytest.raises(Unauthorized, match="required"):
            plugin.actor_from_request(_request({}))
        with pytest.raises(Unauthorized, match="refused"):
            plugin.actor_from_request(_request({"Authorization": "Bearer flwd_wrong"}))
        with pytest.raises(Unauthorized):
            plugin.actor_from_request(_request({"Authorization": f"Basic {token}"}))
        actor = plugin.actor_from_request(_request({"Authorization": f"Bearer {token}"}))
        assert actor is not None and actor.name == "reader" and actor.tenant == "default"

        allowed = plugin.permission_allowed
        assert allowed(actor, access.VIEW_JOBS, access.SYSTEM) is True
        assert allowed(actor, access.RUN_JOB, access.SYSTEM) is False
        assert allowed(actor, access.ADMINISTER, access.SYSTEM) is False
        job = Resource(kind="job", job_id="backup/daily")
        assert allowed(actor, access.VIEW_RUNS, job) is True
        assert allowed(actor, access.VIEW_RUNS, Resource(kind="job", job_id="deploy")) is False
        other = Resource(kind="run", run_id="r", job_id="backup/daily", tenant="acme")
        assert allowed(actor, access.VIEW_RUNS, other) is False
        assert allowed(None, access.VIEW_JOBS, access.SYSTEM) is False  # anonymous, secure

        asyncio.run(security.audit_written())  # written on the audit's own thread
        entries = security.store.read_audit(action="auth.refused") if security.store else []
        assert {e.detail for e in entries} >= {"no token", "unknown token"}
    finally:
        security.close()


def test_disabled_profile_lets_anonymous_through(tmp_path: Path) -> None:
    security = install(settings_for(tmp_path, "disabled"))
    try:
        assert plugin.actor_from_request(_request({})) is None
        assert plugin.permission_allowed(None, access.ADMINISTER, access.SYSTEM) is None
    finally:
        security.close()


def test_audit_entries_are_written_off_the_loop_in_order(tmp_path: Path) -> None:
    security = install(settings_for(tmp_path))
    writers: set[str] = set()
    real = SecurityStore.append_audit

    def spying(store: SecurityStore, entries: list[tuple[object, ...]]) -> None:
        writers.add(threading.current_thread().name)
        real(store, entries)  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        for n in range(50):
            security.audit("ci", "run.create", f"run_{n:02d}")
        await security.audit_written()
        store = security.open().store
        return [e.target for e in store.read_audit(limit=100)]

    try:
        SecurityStore.append_audit = spying  # type: ignore[method-assign]
        targets = asyncio.run(scenario())
        security.audit("ci", "run.cancel", "run_last")  # appended, then the server stops
    finally:
        SecurityStore.append_audit = real  # type: ignore[method-assign]
        security.close()
    assert targets == [f"run_{n:02d}" for n in reversed(range(50))]  # newest first
    assert writers and all(name.startswith("flwd-audit") for name in writers)
    store = SecurityStore(tmp_path / "data")
    try:
        assert store.read_audit(limit=1)[0].target == "run_last"  # close wrote it
    finally:
        store.close()
