"""End to end: the request guards (Host, body media type, CORS), the connection and stream
caps, the request-head timeout, malformed input, and running out of file descriptors,
each against a real `flwd serve`."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MCP_HEADERS, MCP_INITIALIZE, ServerProcess

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2.0


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["type"] == f"https://flowd.org/problems/{slug}"
    assert body["status"] == status
    return body


def total_runs(http: httpx.Client) -> int:
    total: int = http.get("/runs").json()["total"]
    return total


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    chunks = []
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def split_answer(answer: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    problem: dict[str, object] = json.loads(body)
    return status, headers, problem


def log_lines(server: ServerProcess) -> list[str]:
    return server.log.read_text(errors="replace").splitlines()


def wait_healthy(server: ServerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.api + "/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"the server did not answer again within {timeout}s")


# --- Point 4: a web page cannot drive a local flwd -------------------------------------


def test_a_body_without_json_content_type_is_415_and_creates_no_run(
    api_http: httpx.Client,
) -> None:
    before = total_runs(api_http)
    body = b'{"job_id": "noop"}'
    # What `fetch(url, {method: 'POST', body: blob})` sends: a body and no Content-Type.
    bare = api_http.post("/runs", content=body)
    assert "content-type" not in bare.request.headers
    problem = assert_problem(bare, 415, "unsupported-media-type")
    assert bare.headers["accept-post"] == "application/json"
    assert "application/json" in str(problem["detail"])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = api_http.post("/runs", content=body, headers={"Content-Type": content_type})
        assert_problem(response, 415, "unsupported-media-type")
    assert total_runs(api_http) == before
    ok = api_http.post("/runs", content=body, headers={"Content-Type": "application/json"})
    assert ok.status_code == 201, ok.text
    assert total_runs(api_http) == before + 1


def test_a_foreign_host_is_refused_and_loopback_names_are_served(api_http: httpx.Client) -> None:
    before = total_runs(api_http)
    evil = {"Host": "evil.example"}
    assert_problem(api_http.get("/health", headers=evil), 400, "host-not-allowed")
    assert_problem(api_http.get("/runs", headers=evil), 400, "host-not-allowed")
    created = api_http.post("/runs", json={"job_id": "noop"}, headers=evil)
    assert_problem(created, 400, "host-not-allowed")
    assert_problem(
        api_http.get("/health", headers={"Host": "evil.example:8080"}), 400, "host-not-allowed"
    )
    assert_problem(
        api_http.get("/health", headers={"Host": "127.0.0.1.evil.example"}), 400, "host-not-allowed"
    )
    assert total_runs(api_http) == before
    for host in ("localhost:1234", "localhost", "127.0.0.1:9", "[::1]:8080", "LOCALHOST:80"):
        assert api_http.get("/health", headers={"Host": host}).status_code == 200, host


def test_no_cors_permission_unless_an_origin_is_configured(api_http: httpx.Client) -> None:
    origin = {"Origin": "https://evil.example"}
    simple = api_http.get("/runs", headers=origin)
    assert simple.status_code == 200
    assert not [h for h in simple.headers if h.lower().startswith("access-control-")]
    preflight = api_http.options(
        "/runs",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with an extra allowed host, one CORS origin, small caps and a short
    request-head timeout."""
    server = ServerProcess(
        tmp_path_factory.mktemp("flwd-guards"),
        FLWD_ALLOWED_HOSTS="flwd.internal",
        FLWD_CORS_ORIGINS="https://ui.example",
        FLWD_MAX_CONNECTIONS="4",
        FLWD_MAX_STREAMS="2",
        FLWD_HEADER_TIMEOUT=f"{HEADER_TIMEOUT:g}s",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_allowed_host_adds_a_name(guarded_server: ServerProcess) -> None:
    with guarded_server.client() as http:
        assert http.get("/health", headers={"Host": "flwd.internal:8443"}).status_code == 200
        assert http.get("/health", headers={"Host": "localhost"}).status_code == 200
        assert_problem(
            http.get("/health", headers={"Host": "evil.example"}), 400, "host-not-allowed"
        )


def test_cors_for_a_configured_origin_only(guarded_server: ServerProcess) -> None:
    with guarded_server.client() as http:
        ours = {"Origin": "https://ui.example"}
        response = http.get("/runs", headers=ours)
        assert response.headers["access-control-allow-origin"] == "https://ui.example"
        assert "X-Total-Count" in response.headers["access-control-expose-headers"]
        assert "Origin" in response.headers["vary"]
        # A refusal of that origin's request is readable by the page too.
        refused = http.post("/runs", content=b"{}", headers={**ours, "Content-Type": "text/plain"})
        assert_problem(refused, 415, "unsupported-media-type")
        assert refused.headers["access-control-allow-origin"] == "https://ui.example"
        ask = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        preflight = http.options("/runs", headers={**ours, **ask})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Content-Type" in preflight.headers["access-control-allow-headers"]
        other = {"Origin": "https://evil.example"}
        for response in (
            http.get("/runs", headers=other),
            http.options("/runs", headers={**other, **ask}),
        ):
            assert "access-control-allow-origin" not in response.headers


# --- Point 3: connections are bounded --------------------------------------------------


def test_the_connection_caps_are_answered_with_a_problem(guarded_server: ServerProcess) -> None:
    port = guarded_server.port
    request = b"GET /api/v1/runs HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with contextlib.ExitStack() as stack:
        # max_connections (4) idle connections: a request on a fifth is refused.
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(4)
        ]
        status, headers, problem = split_answer(raw_exchange(port, request))
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["content-type"] == "application/problem+json"
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert problem["type"] == "https://flowd.org/problems/too-many-connections"
        assert problem["instance"] == "/api/v1/runs"
        assert problem["retry_after"] == 1
        # max_connections + max_streams (6) open: a seventh is answered below the app.
        idle += [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(2)
        ]
        status, headers, problem = split_answer(raw_exchange(port, request))
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["retry-after"] == "1"
        assert problem["type"] == "https://flowd.org/problems/too-many-connections"
        assert "6 connections" in str(problem["detail"])
        assert len(idle) == 6
    wait_healthy(guarded_server)  # the idle ones closed: served again


def test_streams_have_their_own_cap_and_do_not_count_as_connections(
    guarded_server: ServerProcess,
) -> None:
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            client = stack.enter_context(guarded_server.client())
            stream = stack.enter_context(client.stream("GET", "/events/runs"))
            assert stream.status_code == 200
        with guarded_server.client() as http:
            third = http.get("/events/runs")
            body = assert_problem(third, 503, "too-many-streams")
            assert third.headers["retry-after"] == "1"
            assert body["retry_after"] == 1
            # Asking for a stream by Accept counts as one too.
            by_accept = http.get("/health", headers={"Accept": "text/event-stream"})
            assert_problem(by_accept, 503, "too-many-streams")
        # 2 streams + 2 idle connections + 1 request: more than max_connections (4)
        # connections, yet served, since streams are not counted with the others.
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", guarded_server.port)))
            for _ in range(2)
        ]
        assert len(idle) == 2
        with guarded_server.client() as http:
            assert http.get("/health").status_code == 200


def test_a_slow_request_head_is_cut_after_the_timeout(guarded_server: ServerProcess) -> None:
    answer = b""
    with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n")
        sock.settimeout(0.3)
        answered = None
        # A slow loris: one header line now and then, never the empty line.
        while time.monotonic() - started < HEADER_TIMEOUT + 8:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
                continue
            except ConnectionResetError:
                break
            answered = answered or time.monotonic()
            if not chunk:
                break
            answer += chunk
    assert answered is not None
    elapsed = answered - started
    assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 8, elapsed
    status, _, problem = split_answer(answer)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert problem["type"] == "https://flowd.org/problems/request-timeout"


def test_a_slow_second_request_on_a_kept_alive_connection_is_cut(
    guarded_server: ServerProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = b""
        for _ in range(100):  # the head and the JSON body may come in separate reads
            first += sock.recv(65536)
            if first.endswith(b"}"):
                break
        assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
        answer = read_until_closed(sock, HEADER_TIMEOUT + 8)
        elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 8, elapsed
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_prompt_client_is_not_cut(guarded_server: ServerProcess) -> None:
    """A stream outlives the head timeout: the timeout is on the head, not the request."""
    with guarded_server.client() as http:
        run = http.post(
            "/runs", json={"job_id": "demo/ticker", "args": {"count": 4, "interval": 0.8}}
        ).json()
        started = time.monotonic()
        with http.stream("GET", f"/runs/{run['run_id']}/logs?follow=true") as stream:
            text = "".join(stream.iter_text())
        assert time.monotonic() - started > HEADER_TIMEOUT
        assert "tick 4" in text and "event: end" in text


def test_three_hundred_followers_are_not_refused(api_server: ServerProcess) -> None:
    """Streams are counted apart: 300 followers connecting at once (more than the default
    256 max_connections) are all served, and plain requests still are."""
    head = b"GET /api/v1/events/runs HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with contextlib.ExitStack() as stack:
        followers = [
            stack.enter_context(
                socket.create_connection(("127.0.0.1", api_server.port), timeout=20)
            )
            for _ in range(300)
        ]
        for sock in followers:
            sock.sendall(head)
        for sock in followers:
            answer = b""
            for _ in range(100):  # until the status line is in
                answer += sock.recv(4096)
                if b"\r\n" in answer:
                    break
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        with api_server.client() as http:
            assert http.get("/health").status_code == 200


# --- Point 10: malformed input is a 400 and leaves the log short -----------------------

MALFORMED_QUERIES = [
    ("/runs", {"offset": "9223372036854775808"}, {}),
    ("/runs", {"tenant": "t" * 65}, {}),
    ("/runs", {"tenant": "../etc"}, {}),
    ("/runs/{run}/logs", {"since": "99999999999999999999999"}, {}),
    ("/runs/{run}/logs", {"since": "\u00b2"}, {}),
    ("/runs/{run}/events", {}, {"Last-Event-ID": "1" * 23}),
    ("/runs/{run}/logs", {"follow": "true"}, {"Last-Event-ID": "1" * 23}),
    ("/events/runs", {"since": "99999999999999999999999"}, {}),
]


def test_malformed_input_is_a_400_and_a_burst_leaves_the_log_short(
    api_server: ServerProcess, api_http: httpx.Client
) -> None:
    run = api_http.post("/runs", json={"job_id": "noop", "async": False}).json()
    deep = b'{"job_id": "noop", "args": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}"
    assert len(deep) > 1800
    bad_tenant = b'{"job_id": "noop", "tenant": "no spaces!"}'
    before = log_lines(api_server)
    sent = 0
    for _ in range(20):
        for body in (deep, bad_tenant):
            response = api_http.post(
                "/runs", content=body, headers={"Content-Type": "application/json"}
            )
            sent += len(body)
            assert response.status_code == 400, response.text
        for path, params, headers in MALFORMED_QUERIES:
            response = api_http.get(
                path.replace("{run}", run["run_id"]), params=params, headers=headers
            )
            assert_problem(response, 400, "validation-error")
    assert sent > 20 * 1800  # as in the issue, where 1.8 KB wrote 138 KB of traceback
    new = log_lines(api_server)[len(before) :]
    assert len(new) <= 3, new
    assert not [line for line in new if "Traceback" in line or "Error:" in line], new


# --- Point 3: running out of file descriptors ------------------------------------------


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_running_out_of_descriptors_fails_runs_clearly_logs_little_and_recovers(
    api_own_server: ServerProcess,
) -> None:
    server = api_own_server
    # No cap or timeout to protect the server here: descriptors must run out.
    server.env.update(FLWD_MAX_CONNECTIONS="100000", FLWD_HEADER_TIMEOUT="300s")
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    http = server.client()  # connected before the descriptors run out, and kept alive
    assert http.get("/health").status_code == 200
    # one run first, so that what a run keeps open (the rooms made ahead for the next
    # runs hold a descriptor each) is counted before the limit is set
    warm = http.post("/runs", json={"job_id": "hello", "async": False})
    assert warm.json()["status"] == "success", (warm.json()["reason"], warm.json()["error"])
    # the MCP extension imports its SDK in the background at start-up, and a request to
    # /mcp waits for that: no import is left to run out of descriptors below
    mcp = httpx.post(f"{server.url}/mcp", json=MCP_INITIALIZE, headers=MCP_HEADERS, timeout=60)
    assert mcp.status_code in (200, 404), mcp.text  # 404: no MCP extension installed
    time.sleep(0.5)
    limit = open_descriptors(pid) + 16
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    hogs: list[socket.socket] = []
    try:
        hogs += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(48)]
        deadline = time.monotonic() + 10
        while open_descriptors(pid) < limit and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_descriptors(pid) >= limit
        created = http.post("/runs", json={"job_id": "hello"})
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        deadline = time.monotonic() + 10
        run = created.json()
        while run["status"] not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            run = http.get(f"/runs/{run_id}").json()
        assert run["status"] == "failed", run
        assert run["reason"] == "resources_exhausted", (run["reason"], run["error"])
        assert "out of file descriptors" in run["error"], run
        # The accept loop keeps failing while the descriptors are gone (unthrottled:
        # thousands of lines a second); give it a few seconds to try.
        time.sleep(3)
    finally:
        for sock in hogs:
            sock.close()
        http.close()
    lines = log_lines(server)
    accept_errors = [line for line in lines if "socket.accept() out of system resource" in line]
    assert 1 <= len(accept_errors) <= 2, lines
    assert len(lines) < 30, lines
    assert not [line for line in lines if line.startswith("Traceback")], lines
    # Descriptors free again: requests are served and runs run. The server lets go of a
    # closed connection only once it has read its end (the ones still in the listen
    # backlog are accepted first), so wait until it holds fewer than the limit.
    deadline = time.monotonic() + 10
    while open_descriptors(pid) > limit - 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_descriptors(pid) <= limit - 8
    wait_healthy(server)
    # recovered: within a few seconds a run starts and succeeds again (descriptors are
    # let go of as the server reads each closed connection's end)
    deadline, ended = time.monotonic() + 15, {}
    with server.client() as again:
        while time.monotonic() < deadline:
            done = again.post("/runs", json={"job_id": "hello", "async": False})
            assert done.status_code == 201, done.text
            ended = done.json()
            if ended["status"] == "success":
                break
            time.sleep(0.5)
    assert ended["status"] == "success", (ended["reason"], ended["error"])


def test_unknown_paths_and_methods_are_guarded_too(api_server: ServerProcess) -> None:
    """Litestar answers 404/405 before app middleware runs; the guards wrap routing itself,
    so a foreign Host is refused on any path, with the usual request id."""
    evil = {"Host": "evil.example", "X-Request-ID": "probe-404"}
    with httpx.Client(base_url=api_server.url, timeout=30.0) as http:
        for method, path in (
            ("GET", "/no/such/page"),
            ("GET", "/api/v1/no-such-route"),
            ("DELETE", "/api/v1/jobs"),
            ("PUT", "/api/v1/health"),
            ("HEAD", "/api/v1/nothing-here"),
        ):
            refused = http.request(method, path, headers=evil)
            assert refused.status_code == 400, (method, path, refused.text)
            assert refused.headers["x-request-id"] == "probe-404"
            if method != "HEAD":
                body = assert_problem(refused, 400, "host-not-allowed")
                assert body["request_id"] == "probe-404"
        # with a served Host, the same requests are the router's own answers
        assert_problem(http.get("/api/v1/no-such-route"), 404, "not-found")
        assert_problem(http.delete("/api/v1/jobs"), 405, "method-not-allowed")
        assert http.get("/api/v1/no-such-route").headers["x-request-id"]
