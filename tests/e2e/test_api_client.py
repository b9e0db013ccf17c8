"""FlwdClient (the CLI's remote mode) against a real server."""

from __future__ import annotations

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
