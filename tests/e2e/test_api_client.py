"""FlwdClient (the CLI's remote mode) against a real server."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from flwd import errors
from flwd.client import ClientError, FlwdClient
from flwd.states import RunStatus
from tests.e2e.conftest import ServerProcess, free_port

pytestmark = pytest.mark.e2e


async def test_client_drives_a_run_end_to_end(
    api_server: ServerProcess, tmp_path: pathlib.Path
) -> None:
    async with FlwdClient(api_server.url) as client:
        run = await client.create_run("demo/ticker", {"count": 3, "interval": 0.01})
        events = [event async for event in client.follow_events(run.run_id)]
        assert events[0].type == "run.created" and events[-1].type == "run.finished"
        assert [e.data["message"] for e in events if e.type == "run.output"] == [
            "tick 1",
            "tick 2",
            "tick 3",
        ]
        logs = await client.logs(run.run_id, since=events[0].id)
        assert [line.message for line in logs] == ["tick 1", "tick 2", "tick 3"]
        assert (await client.get_run(run.run_id)).status == RunStatus.SUCCESS
        page = await client.list_runs(job_id="demo/ticker", limit=1)
        assert page.total >= 1 and page.runs[0].job_id == "demo/ticker"

        report = await client.create_run("report", wait=True)
        [artifact] = (await client.list_artifacts(run_id=report.run_id)).artifacts
        path = await client.download_artifact(artifact.id, tmp_path)
        assert path.name == "report.csv" and path.read_bytes() == b"a,b\n1,2\n"


async def test_client_maps_real_problems(api_server: ServerProcess) -> None:
    async with FlwdClient(api_server.url) as client:
        with pytest.raises(errors.JobNotFound) as missing:
            await client.create_run("no/such/job")
        assert missing.value.job_id == "no/such/job"
        with pytest.raises(errors.ArgumentsInvalid) as invalid:
            await client.create_run("needs-target")
        assert [e.path for e in invalid.value.errors] == ["/target"]
        done = await client.create_run("noop", wait=True)
        with pytest.raises(errors.RunNotCancellable):
            await client.cancel_run(done.run_id)


async def test_client_reports_an_unreachable_server() -> None:
    async with FlwdClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(ClientError, match="cannot reach flwd"):
            await client.get_run("run_x")


async def test_client_covers_jobs_steps_streams_restart_and_system(
    api_server: ServerProcess,
) -> None:
    async with FlwdClient(api_server.url) as client:
        jobs = await client.list_jobs(namespace="demo")
        assert {job.id for job in jobs.jobs} == {"demo/ticker", "demo/sleeper"}
        ticker = await client.get_job("demo/ticker")
        assert ticker.args["properties"]["count"]["type"] == "integer"
        assert [step.id for step in ticker.steps] == ["main"] and ticker.retries == 0

        run = await client.create_run("demo/ticker", {"count": 2, "interval": 0.01})
        lines = [line async for line in client.follow_logs(run.run_id)]
        assert [(line.message, line.step_id) for line in lines] == [
            ("tick 1", "main"),
            ("tick 2", "main"),
        ]
        # a run's stream starts at its first event; resuming after it gives the rest once
        watcher = client.stream_events(run_id=run.run_id)
        created = await asyncio.wait_for(anext(watcher), 10)
        await watcher.aclose()
        assert (created.type, created.run_id) == ("run.created", run.run_id)
        rest = []
        async with asyncio.timeout(15):
            async for event in client.stream_events(job_id="demo/ticker", since=created.id):
                if event.run_id == run.run_id:
                    rest.append(event)
                if event.type == "run.finished" and event.run_id == run.run_id:
                    break
        assert rest[0].id > created.id and len({e.id for e in rest}) == len(rest)
        assert [e.data["message"] for e in rest if e.type == "run.output"] == ["tick 1", "tick 2"]

        detail = await client.get_run(run.run_id)
        assert [s.step_id for s in detail.steps] == ["main"]
        assert await client.list_steps(run.run_id) == detail.steps
        again = await client.restart_run(run.run_id, {"count": 1}, wait=True)
        assert again.status == RunStatus.SUCCESS and again.args["count"] == 1
        seen = [r.run_id async for r in client.iter_runs(job_id="demo/ticker", page_size=1)]
        assert seen[:2] == [again.run_id, run.run_id] and len(seen) == len(set(seen))
        since_restart = client.iter_runs(q="ticker", created_from=again.created_at)
        assert [r.run_id async for r in since_restart] == [again.run_id]
        before = await client.list_runs(q="TICK", created_to=again.created_at, limit=1)
        assert before.runs[0].run_id == run.run_id

        assert (await client.health()).status == "healthy"
        assert (await client.ready()).status == "ready"
        info = await client.system_info()
        assert [source.name for source in info.sources] == ["local-fs"]
