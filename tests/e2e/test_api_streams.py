"""Streaming clients cost bounded memory: replays of a big log to clients that never read,
JSON log pages (limit, Link next, tail, since), and a subscriber that stops reading is
cut off within the send timeout and resumes with Last-Event-ID."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import read_frames

pytestmark = pytest.mark.e2e

SEND_TIMEOUT = 2.0


def _job(server: ServerProcess, job_id: str, command: str) -> None:
    folder = server.jobs / job_id
    folder.mkdir()
    (folder / "config.yaml").write_text(json.dumps({"command": command}))


def _finish(http: httpx.Client, run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while http.get(f"/runs/{run_id}").json()["status"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.05)


def _stalled(port: int, path: str, headers: str = "") -> socket.socket:
    """A client that sends its request and reads nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /api/v1{path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
    return sock


def _held(ps: psutil.Process, port: int) -> set[int]:
    """The client ports of the connections the server holds open on `port`."""
    return {
        c.raddr.port
        for c in ps.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.raddr and c.status == "ESTABLISHED"
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = ServerProcess(
        tmp_path_factory.mktemp("streams"),
        FLWD_SEND_TIMEOUT=f"{SEND_TIMEOUT}s",
        FLWD_OUTPUT_HEAD_BYTES=str(100 * 2**20),
    )
    # ~8 MB of 100-byte lines in one go, and 2,500 numbered lines in five bursts (several
    # stored chunks, so pages end inside chunks and between them)
    _job(server, "biglog", "head -c 8000000 /dev/zero | tr '\\0' x | fold -w 99")
    _job(
        server,
        "numbered",
        "for b in 0 1 2 3 4; do seq $((b*500+1)) $((b*500+500)); sleep 0.2; done",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_many_clients_that_never_read_a_big_replay_cost_bounded_memory(
    big: ServerProcess,
) -> None:
    assert big.proc is not None
    ps = psutil.Process(big.proc.pid)
    with big.client() as http:
        run_id = http.post("/runs", json={"job_id": "biglog"}).json()["run_id"]
        _finish(http, run_id)
        rss_before = ps.memory_info().rss
        paths = [
            f"/runs/{run_id}/logs?follow=true",
            f"/runs/{run_id}/events",
            "/events/runs?since=0",
            f"/runs/{run_id}/logs",
        ]
        socks = [_stalled(big.port, paths[i % len(paths)]) for i in range(40)]
        try:
            peak = rss_before
            slowest = 0.0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # while they hang
                started = time.monotonic()
                assert http.get("/health", timeout=10).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                peak = max(peak, ps.memory_info().rss)
                time.sleep(0.05)
            # the replay of ~8 MB to each of 40 clients is not held (that was ~3 GB)
            assert peak - rss_before < 150 * 2**20, (peak - rss_before) / 2**20
            assert slowest < 5, slowest
            # the streams that could not send are cut within the send timeout (+ slack)
            mine = {sock.getsockname()[1] for sock in socks}
            cut_by = time.monotonic() + SEND_TIMEOUT + 10
            while _held(ps, big.port) & mine:
                assert time.monotonic() < cut_by, len(_held(ps, big.port) & mine)
                time.sleep(0.2)
        finally:
            for sock in socks:
                sock.close()


def _links(response: httpx.Response) -> dict[str, str]:
    return {
        rel: url
        for url, rel in re.findall(r'<([^>]*)>; rel="(\w+)"', response.headers.get("link", ""))
    }


def test_json_logs_come_in_pages_linked_to_the_next(big: ServerProcess) -> None:
    with big.client() as http:
        run_id = http.post("/runs", json={"job_id": "numbered"}).json()["run_id"]
        _finish(http, run_id)
        path = f"/runs/{run_id}/logs"
        first = http.get(path)
        assert first.status_code == 200
        assert first.headers["x-total-count"] == "2500"
        assert [x["message"] for x in first.json()["logs"]] == [str(i) for i in range(1, 1001)]
        assert "next" in _links(first)

        # walking `next` with a small page size: every line once, in order
        seen: list[dict[str, object]] = []
        url: str | None = f"/api/v1{path}?limit=333"
        for _ in range(20):
            if url is None:
                break
            page = http.get(big.url + url)
            assert page.status_code == 200, page.text
            assert page.headers["x-total-count"] == "2500"
            lines = page.json()["logs"]
            assert 0 < len(lines) <= 333
            seen.extend(lines)
            url = _links(page).get("next")
        assert url is None
        assert [x["message"] for x in seen] == [str(i) for i in range(1, 2501)]
        ids = [int(str(x["id"])) for x in seen]
        assert ids == sorted(set(ids))

        # since an id in the middle of a chunk, and tail
        mid = seen[1234]["id"]
        after = http.get(path, params={"since": str(mid), "limit": 5}).json()["logs"]
        assert [x["message"] for x in after] == ["1236", "1237", "1238", "1239", "1240"]
        tail = http.get(path, params={"tail": 7})
        assert [x["message"] for x in tail.json()["logs"]] == [str(i) for i in range(2494, 2501)]
        assert "next" not in _links(tail)

        # since an RFC 3339 time: the lines stamped after it (a chunk shares one stamp)
        stamp = str(seen[600]["timestamp"])
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        expected = [
            x["message"]
            for x in seen
            if datetime.fromisoformat(str(x["timestamp"]).replace("Z", "+00:00")) > moment
        ]
        by_time = http.get(path, params={"since": stamp, "limit": 5000}).json()["logs"]
        assert [x["message"] for x in by_time] == expected
        assert 0 < len(expected) < 2500

        for params in (
            {"limit": "0"},
            {"limit": "5001"},
            {"tail": "0"},
            {"tail": "5", "since": "3"},
            {"tail": "5", "limit": "3"},
            {"since": "yesterday"},
            {"since": "-4"},
        ):
            bad = http.get(path, params=params)
            assert bad.status_code == 400, (params, bad.text)
            assert bad.headers["content-type"] == "application/problem+json"


def test_sse_logs_accept_since_as_a_time(big: ServerProcess) -> None:
    with big.client() as http:
        run_id = http.post("/runs", json={"job_id": "numbered"}).json()["run_id"]
        _finish(http, run_id)
        lines = http.get(f"/runs/{run_id}/logs", params={"limit": 5000}).json()["logs"]
        stamp = lines[1700]["timestamp"]
        expected = [x["id"] for x in lines if x["timestamp"] > stamp]  # same format: sortable
        frames = read_frames(
            http, f"/runs/{run_id}/logs?follow=true&since={stamp}", limit=10**5, timeout=30
        )
        assert frames[-1]["event"] == "end"
        assert [f["data"]["id"] for f in frames if f["event"] == "log"] == expected


def test_a_subscriber_that_stops_reading_is_cut_off_and_resumes(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, FLWD_SEND_TIMEOUT=f"{SEND_TIMEOUT}s", FLWD_OUTPUT_HEAD_BYTES=str(200 * 2**20)
    )
    gate = tmp_path / "gate"
    _job(
        server,
        "flood",
        f"while [ ! -e {gate} ]; do sleep 0.02; done; "
        "head -c 30000000 /dev/zero | tr '\\0' x | fold -w 999",
    )
    server.start()
    try:
        assert server.proc is not None
        ps = psutil.Process(server.proc.pid)
        with server.client() as http:
            # from the first event on (the server is new), so no event can be missed
            sock = _stalled(server.port, "/events/runs", "Last-Event-ID: 0\r\n")
            run_id = http.post("/runs", json={"job_id": "flood"}).json()["run_id"]
            raw = b""
            deadline = time.monotonic() + 20
            while b"event: run.started" not in raw:  # it streams; now it stops reading
                assert time.monotonic() < deadline
                raw += sock.recv(65536)
            port = sock.getsockname()[1]
            gate.touch()
            stalled_at = time.monotonic()
            while port in _held(ps, server.port):
                assert time.monotonic() - stalled_at < SEND_TIMEOUT + 10, "not cut off"
                time.sleep(0.1)
            # what reached the client before the cut, up to the last whole frame
            try:
                while data := sock.recv(1 << 20):
                    raw += data
            except ConnectionResetError:
                pass
            sock.close()
            _finish(http, run_id)
            assert http.get("/health").status_code == 200

            cut = _frames(raw)
            assert cut and cut[-1]["event"] != "run.finished"
            rest = read_frames(
                http,
                "/events/runs",
                headers={"Last-Event-ID": str(cut[-1]["id"])},
                stop=lambda f: f["event"] == "run.finished" and f["data"]["run_id"] == run_id,
                limit=10**6,
                timeout=60,
            )
            stored = read_frames(http, f"/runs/{run_id}/events", limit=10**6, timeout=60)
        got = [int(f["id"]) for f in cut if f["run_id"] == run_id]
        got += [int(f["id"]) for f in rest if f["data"]["run_id"] == run_id]
        assert got == [int(f["id"]) for f in stored]  # nothing lost, nothing twice
    finally:
        server.stop()


def _frames(raw: bytes) -> list[dict[str, str]]:
    """Whole SSE frames with an id from a raw chunked HTTP response cut anywhere: flwd
    writes whole frames per HTTP chunk, so only whole chunks are read."""
    chunked = raw.partition(b"\r\n\r\n")[2]
    body, pos = [], 0
    while (eol := chunked.find(b"\r\n", pos)) >= 0:
        size = int(chunked[pos:eol], 16)
        end = eol + 2 + size
        if size == 0 or end + 2 > len(chunked):
            break
        body.append(chunked[eol + 2 : end])
        pos = end + 2
    frames = []
    for block in b"".join(body).split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.split(b"\n"):
            name, sep, value = line.decode().partition(": ")
            if sep and not name.startswith(":"):
                fields[name] = value
        if "id" in fields and "data" in fields:
            fields["run_id"] = json.loads(fields["data"]).get("run_id", "")
            frames.append(fields)
    return frames
