"""SSE resume with Last-Event-ID: mid-run, and across a server restart; clean shutdown;
the global event stream and its filters."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import Frame, read_frames

pytestmark = pytest.mark.e2e


def ids(frames: list[Frame]) -> list[int]:
    return [int(f["id"]) for f in frames]


def finished(frame: Frame) -> bool:
    return frame["event"] == "run.finished"


def start_ticker(http: httpx.Client, count: int, interval: float) -> str:
    response = http.post(
        "/runs", json={"job_id": "demo/ticker", "args": {"count": count, "interval": interval}}
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def test_reconnect_mid_run_with_last_event_id(api_http: httpx.Client) -> None:
    run_id = start_ticker(api_http, 20, 0.05)
    path = f"/runs/{run_id}/events"
    first = read_frames(api_http, path, limit=5)
    rest = read_frames(api_http, path, headers={"Last-Event-ID": first[-1]["id"]}, stop=finished)
    full = read_frames(api_http, path, stop=finished)
    assert ids(first) + ids(rest) == ids(full)
    assert ids(full) == sorted(set(ids(full)))
    ticks = [f["data"]["message"] for f in first + rest if f["event"] == "run.output"]
    assert ticks == [f"tick {i}" for i in range(1, 21)]
    via_query = read_frames(api_http, f"{path}?since={first[-1]['id']}", stop=finished)
    assert ids(via_query) == ids(rest)


def test_reconnect_after_a_server_restart(api_own_server: ServerProcess) -> None:
    server = api_own_server
    server.start()
    with server.client() as http:
        run_id = start_ticker(http, 400, 0.05)
        path = f"/runs/{run_id}/events"
        before = read_frames(http, path, stop=lambda f: f["event"] == "run.output")
    assert server.stop(signal.SIGTERM) == 0  # a clean shutdown, not a kill
    server.start()
    with server.client() as http:
        after = read_frames(http, path, headers={"Last-Event-ID": before[-1]["id"]}, stop=finished)
        full = read_frames(http, path, stop=finished)
        run = http.get(f"/runs/{run_id}").json()
    assert ids(before) + ids(after) == ids(full)
    assert after[-1]["event"] == "run.finished"
    # The shutdown stopped the run and wrote its terminal state; nothing was left `running`.
    assert run["status"] in ("cancelled", "failed")
    assert after[-1]["data"]["status"] == run["status"]


def test_live_stream_filters_by_job(api_http: httpx.Client) -> None:
    frames: list[Frame] = []
    deadline = time.monotonic() + 20
    created = False
    with api_http.stream("GET", "/events/runs", params={"job_id": "hello"}) as response:
        assert response.headers["x-accel-buffering"] == "no"
        current = Frame()
        for line in response.iter_lines():
            assert time.monotonic() < deadline, frames
            if line.startswith(": ping") and not created:
                # The stream is live and subscribed by its first heartbeat; now make events.
                api_http.post("/runs", json={"job_id": "noop"})
                api_http.post("/runs", json={"job_id": "hello", "args": {"name": "live"}})
                created = True
            elif line.startswith("id: ") or line.startswith("event: "):
                name, _, value = line.partition(": ")
                current[name] = value
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                frames.append(current)
                if finished(current):
                    break
                current = Frame()
    assert frames and all(f["data"]["job_id"] == "hello" for f in frames)
    assert frames[0]["event"] == "run.created"
    assert ids(frames) == sorted(ids(frames))


def test_global_stream_with_run_id_starts_at_the_run(api_http: httpx.Client) -> None:
    response = api_http.post("/runs", json={"job_id": "hello", "async": False})
    run_id = response.json()["run_id"]
    frames = read_frames(api_http, f"/events/runs?run_id={run_id}", stop=finished)
    assert frames[0]["event"] == "run.created"
    assert {f["data"]["run_id"] for f in frames} == {run_id}
    outputs = [f["data"] for f in frames if f["event"] == "run.output"]
    assert outputs[0]["message"] == "hello world" and outputs[0]["level"] == "info"


def test_concurrent_followers_each_get_every_event_once(api_server: ServerProcess) -> None:
    with api_server.client() as http:
        run_id = start_ticker(http, 60, 0.01)
    path = f"/runs/{run_id}/events"

    def follow(_: int) -> list[int]:
        with api_server.client() as client:
            return ids(read_frames(client, path, stop=finished))

    with ThreadPoolExecutor(max_workers=24) as pool:
        streams = list(pool.map(follow, range(24)))
    with api_server.client() as http:
        stored = read_frames(http, path, stop=finished)
    full = ids(stored)
    assert len([f for f in stored if f["event"] == "run.output"]) == 60
    assert full == sorted(set(full)) and finished(stored[-1])
    assert all(stream == full for stream in streams)
