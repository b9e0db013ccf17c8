"""API niceties against a real `flwd serve`: the `jobs.changed` stream of hot reload."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from flwd.client import FlwdClient
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


def _add_job(jobs: Path, job_id: str) -> None:
    folder = jobs / job_id
    folder.mkdir(parents=True)
    config = {"description": "added while serving", "command": "echo hi"}
    (folder / "config.yaml").write_text(json.dumps(config))


def test_a_job_folder_added_while_serving_is_announced_on_events_jobs(
    api_own_server: ServerProcess,
) -> None:
    server = api_own_server
    server.start()
    with server.client() as http:
        deadline = time.monotonic() + 15.0
        frame: dict[str, str] = {}
        with http.stream("GET", "/events/jobs", timeout=15.0) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            # the stream's starting catalogue is fixed once its headers are sent
            _add_job(server.jobs, "fresh")
            for line in response.iter_lines():  # heartbeats every second bound each wait
                assert time.monotonic() < deadline, "no jobs.changed within 15 s"
                if line.startswith(("event:", "data:", "id:")):
                    name, _, value = line.partition(":")
                    frame[name] = value.strip()
                if line == "" and frame.get("event") == "jobs.changed":
                    break
        assert "id" not in frame  # live only: nothing to resume from
        data = json.loads(frame["data"])
        assert data["type"] == "jobs.changed"
        assert data["added"] == ["fresh"]
        assert data["changed"] == [] and data["removed"] == []
        assert "fresh" in {job["id"] for job in http.get("/jobs").json()["jobs"]}

        # the client's follow_jobs sees a removal too
        async def follow() -> list[str]:
            async with FlwdClient(server.url) as client:
                stream = client.follow_jobs()
                first = asyncio.ensure_future(anext(stream))
                # remove again and again (bounded) until the stream, once connected, sees it
                for attempt in range(30):
                    done, _ = await asyncio.wait({first}, timeout=0.5)
                    if done:
                        break
                    target = server.jobs / "fresh"
                    if target.exists():
                        (target / "config.yaml").unlink()
                        target.rmdir()
                    else:
                        _add_job(server.jobs, f"again{attempt}")
                change = await asyncio.wait_for(first, 10.0)
                await stream.aclose()
                return change.removed + change.added

        ids = asyncio.run(follow())
        assert ids and all(i == "fresh" or i.startswith("again") for i in ids)
