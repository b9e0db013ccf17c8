"""The pure parts of the request guards: JSON depth without decoding, Host matching, the
log throttle, failure reasons of OS errors, and the guard settings."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import asgi
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send

from flwd.api.connections import JoinedWrites
from flwd.api.guards import MAX_JSON_DEPTH, HostPolicy, host_name, json_too_deep
from flwd.app import create_app
from flwd.hookspecs import hookimpl
from flwd.logthrottle import ThrottledHandler
from flwd.plugins import make_plugin_manager
from flwd.settings import Settings, SettingsError, load_settings
from flwd.states import FailureReason, failure_reason_of
from tests.api_support import FakeRunService, fake_services_factory


def depth(value: Any) -> int:
    """Nesting depth by walking the decoded value (the reference)."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ab', max_size=6)
scalars = st.none() | st.booleans() | st.integers() | tricky_text


def chains(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=2) | st.dictionaries(tricky_text, inner, max_size=2)


# Deep but narrow documents around the limits checked below.
nested = st.recursive(scalars, chains, max_leaves=120)


def wrap(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value] if levels % 2 else {"k[": value}
    return value


@given(
    value=nested, extra=st.integers(min_value=0, max_value=80), limit=st.sampled_from([2, 5, 64])
)
def test_json_depth_matches_a_decoding_walk(value: Any, extra: int, limit: int) -> None:
    document = wrap(value, extra)
    body = json.dumps(document).encode()
    assert json_too_deep(body, limit) == (depth(document) > limit)


def test_json_depth_at_the_default_limit() -> None:
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    # Brackets inside strings, escaped quotes included, do not count.
    assert not json_too_deep(b'["' + b"[" * 500 + b'\\"' + b"{" * 500 + b'"]')
    assert json_too_deep(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8080", "localhost"),
        ("[::1]:80", "[::1]"),
        ("EXAMPLE.org", "example.org"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "[::1]"),
    ],
)
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_host_policy() -> None:
    local = HostPolicy("127.0.0.1", [])
    assert local.allows("localhost:1234") and local.allows("[::1]:8080")
    assert not local.allows("evil.example") and not local.allows(None)
    assert not local.allows("localhost.evil.example")
    extra = HostPolicy("::1", ["flwd.internal"])
    assert extra.allows("flwd.internal:443") and extra.allows("127.0.0.1")
    everywhere = HostPolicy("0.0.0.0", [])
    assert everywhere.allows("anything.example")
    named = HostPolicy("0.0.0.0", ["flwd.example.com"])
    assert named.allows("flwd.example.com") and not named.allows("localhost")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_lines_are_written_once_per_interval_and_counted() -> None:
    stream, clock = io.StringIO(), Clock()
    handler = ThrottledHandler(stream, interval=10.0, clock=clock)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    log = logging.getLogger("test.throttle")
    log.propagate = False
    log.addHandler(handler)
    try:
        for n in range(1000):
            log.warning("refused %s from %s", f"/runs/{n}", "127.0.0.1")
        log.warning("another kind of line")
        log.setLevel(logging.INFO)
        for n in range(3):  # informational lines (the access log) are not throttled
            log.info("GET /runs/%s", n)
        assert stream.getvalue().splitlines() == [
            "test.throttle: refused /runs/0 from 127.0.0.1",
            "test.throttle: another kind of line",
            "test.throttle: GET /runs/0",
            "test.throttle: GET /runs/1",
            "test.throttle: GET /runs/2",
        ]
        clock.now = 10.5
        log.warning("refused %s from %s", "/runs/x", "127.0.0.1")
        assert stream.getvalue().splitlines()[5:] == [
            "test.throttle: suppressed 999 similar lines in the last 10s: refused %s from %s",
            "test.throttle: refused /runs/x from 127.0.0.1",
        ]
    finally:
        log.removeHandler(handler)


def test_out_of_descriptors_is_logged_without_a_traceback() -> None:
    stream = io.StringIO()
    handler = ThrottledHandler(stream, clock=Clock())
    log = logging.getLogger("test.throttle.emfile")
    log.propagate = False
    log.addHandler(handler)
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError:
            log.exception("socket.accept() out of system resource")
        assert stream.getvalue().splitlines() == [
            "socket.accept() out of system resource: [Errno 24] Too many open files"
        ]
    finally:
        log.removeHandler(handler)


def test_failure_reason_of_os_errors() -> None:
    assert failure_reason_of(OSError(errno.EMFILE, "x")) is FailureReason.RESOURCES_EXHAUSTED
    assert failure_reason_of(OSError(errno.ENFILE, "x")) is FailureReason.RESOURCES_EXHAUSTED
    assert failure_reason_of(OSError(errno.ENOENT, "x")) is FailureReason.ERROR
    assert failure_reason_of(ValueError("x")) is FailureReason.ERROR


def test_guard_settings_from_environment_and_flags() -> None:
    env = {
        "FLWD_ALLOWED_HOSTS": "a.example, b.example",
        "FLWD_CORS_ORIGINS": "https://ui.example",
        "FLWD_MAX_CONNECTIONS": "10",
        "FLWD_MAX_STREAMS": "20",
        "FLWD_HEADER_TIMEOUT": "3s",
    }
    settings = load_settings(env)
    assert settings.allowed_hosts == ("a.example", "b.example")
    assert settings.cors_origins == ("https://ui.example",)
    assert (settings.max_connections, settings.max_streams, settings.header_timeout) == (
        10,
        20,
        3.0,
    )
    flagged = load_settings(env, allowed_hosts=("c.example",), cors_origins=())
    assert flagged.allowed_hosts == ("c.example",)
    assert flagged.cors_origins == ("https://ui.example",)  # an empty flag keeps the env
    with pytest.raises(SettingsError):
        load_settings({"FLWD_CORS_ORIGINS": "ui.example"})
    with pytest.raises(SettingsError):
        load_settings({"FLWD_CORS_ORIGINS": "https://ui.example/path"})
    with pytest.raises(SettingsError):
        load_settings({"FLWD_HEADER_TIMEOUT": "0"})


class MountPlugin:
    """An extension mounting a plain ASGI app, as the MCP extension mounts `/mcp`."""

    @hookimpl
    def register_routes(self, settings: Settings) -> list[Any]:
        @asgi("/mcp", is_mount=True, copy_scope=True)
        async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"mounted", "more_body": False})

        return [mcp]


async def test_the_guards_cover_a_mounted_asgi_app(api_service: FakeRunService) -> None:
    app = create_app(
        Settings(watch=False),
        make_plugin_manager(load_entrypoints=False, extra=[MountPlugin()]),
        services_factory=fake_services_factory(api_service),
    )
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        ok = await client.post("/api/v1/mcp", json={"jsonrpc": "2.0"})
        assert ok.status_code == 200 and ok.text == "mounted"
        evil = await client.post(
            "/api/v1/mcp", json={"jsonrpc": "2.0"}, headers={"Host": "evil.example"}
        )
        assert evil.status_code == 400
        assert evil.json()["type"].endswith("/host-not-allowed")
        blob = await client.post("/api/v1/mcp", content=b"{}", headers={"Content-Type": ""})
        assert blob.status_code == 415
        deep = await client.post(
            "/api/v1/mcp",
            content=b"[" * 65 + b"]" * 65,
            headers={"Content-Type": "application/json"},
        )
        assert deep.status_code == 400
        assert deep.json()["type"].endswith("/malformed-request")


class _Recording(asyncio.Transport):
    """A transport that records each write it is given (what reaches the socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_loop_pass_reach_the_socket_as_one() -> None:
    real = _Recording()
    joined = JoinedWrites(real)
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    joined.write(b"{}")
    assert real.writes == [] and joined.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert joined.get_write_buffer_size() == 0
    # closing sends what waits first; nothing is written once the socket is closing
    joined.write(b"last")
    joined.close()
    assert real.writes[-1] == b"last" and real.closed
    joined.write(b"after")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"last"


async def test_joined_writes_over_a_real_socket_arrive_whole_and_in_order() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    joined = JoinedWrites(transport)
    reader, writer = await asyncio.open_connection(sock=theirs)
    try:
        for part in (b"a" * 70_000, b"b", b"c" * 3):
            joined.write(part)
        joined.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"a" * 70_000 + b"b" + b"ccc"
    finally:
        joined.close()
        writer.close()
