"""Retention on a real server: the background pass prunes old runs by itself, and an SSE
client resuming from an event id that was pruned is told so (410 `events-pruned`) rather
than silently given a gap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import read_frames

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


def _status(http: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    """The response of a stream, read only as far as its status and headers (a problem
    body is read whole)."""
    with http.stream("GET", path, **kwargs) as response:
        if response.headers["content-type"].startswith(PROBLEM):
            response.read()
        return response


def test_background_pruning_and_resuming_from_a_pruned_event(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, FLWD_RETENTION_MAX_RUNS="2", FLWD_PRUNE_INTERVAL="0.2s")
    server.start()
    try:
        with server.client() as http:
            run_ids: list[str] = []
            events: dict[str, list[int]] = {}
            for count in range(4):
                created = http.post("/runs", json={"job_id": "noop", "async": False})
                assert created.status_code == 201, created.text
                assert created.json()["status"] == "success"
                run_id = created.json()["run_id"]
                run_ids.append(run_id)
                if count < 2:  # with two runs nothing can be pruned yet: read their ids
                    frames = read_frames(http, f"/runs/{run_id}/events")
                    events[run_id] = [int(f["id"]) for f in frames]

            # the background pass keeps the 2 newest runs of the job
            deadline = time.monotonic() + 20
            while True:
                listing = http.get("/runs", params={"job_id": "noop"}).json()
                if listing["total"] == 2:
                    break
                assert time.monotonic() < deadline, f"not pruned in time: {listing}"
                time.sleep(0.1)
            assert {r["run_id"] for r in listing["runs"]} == set(run_ids[2:])
            for gone in run_ids[:2]:
                missing = http.get(f"/runs/{gone}")
                assert missing.status_code == 404
                assert missing.json()["type"].endswith("/run-not-found")

            # resuming the run-events stream from inside what was pruned: a problem
            watermark = events[run_ids[1]][-1]
            first = events[run_ids[0]][0]
            for kwargs in (
                {"headers": {"Last-Event-ID": str(first)}},
                {"params": {"since": watermark - 1}},
                {"params": {"since": first, "job_id": "noop"}},
            ):
                refused = _status(http, "/events/runs", **kwargs)
                assert refused.status_code == 410, kwargs
                assert refused.headers["content-type"].startswith(PROBLEM)
                problem = refused.json()
                assert problem["type"] == "https://flowd.org/problems/events-pruned"
                assert problem["status"] == 410 and str(watermark) in problem["detail"]

            # from the watermark on nothing is missing; nor for a job that lost nothing
            for kwargs in (
                {"headers": {"Last-Event-ID": str(watermark)}},
                {"params": {"since": 0, "job_id": "hello"}},
            ):
                assert _status(http, "/events/runs", **kwargs).status_code == 200, kwargs
            # the kept runs replay from their first event as before
            kept = read_frames(http, f"/runs/{run_ids[3]}/events")
            assert [f["event"] for f in kept][-1] == "run.finished"
    finally:
        server.stop()
