"""FlwdClient against a mocked network (respx): decoding, problem mapping, SSE resume."""

from __future__ import annotations

import os
import pathlib

import httpx
import pytest
import respx

from flwd import errors
from flwd.client import ClientError, FlwdClient

BASE = "http://127.0.0.1:9"
API = BASE + "/api/v1"
RUN = {
    "run_id": "run_1",
    "job_id": "backup/daily",
    "status": "success",
    "created_at": "2024-01-15T10:30:00Z",
    "args": {"target": "/mnt"},
    "result": {"value": {"files": 3}},
}


def problem(slug: str, status: int, detail: str, **extra: object) -> httpx.Response:
    body = {
        "type": f"https://flowd.org/problems/{slug}",
        "title": slug,
        "status": status,
        "detail": detail,
        "instance": "/x",
        **extra,
    }
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


def sse(*frames: tuple[int, str, dict[str, object]]) -> httpx.Response:
    lines = [": flwd event stream\nretry: 1000\n\n"]
    for event_id, kind, data in frames:
        payload = {
            "id": event_id,
            "type": kind,
            "run_id": "run_1",
            "job_id": "backup/daily",
            "timestamp": "2024-01-15T10:30:01Z",
            **data,
        }
        lines.append(
            f"id: {event_id}\nevent: {kind}\ndata: {httpx.Response(200, json=payload).text}\n\n"
        )
    return httpx.Response(200, text="".join(lines), headers={"Content-Type": "text/event-stream"})


@respx.mock
async def test_create_run_posts_the_contract_body_and_decodes_the_run() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(201, json=RUN))
    async with FlwdClient(BASE, token="t0k") as client:
        run = await client.create_run("backup/daily", {"target": "/mnt"}, wait=True)
    assert run.run_id == "run_1" and run.result is not None and run.result.value == {"files": 3}
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer t0k"
    assert httpx.Response(200, content=sent.content).json() == {
        "job_id": "backup/daily",
        "args": {"target": "/mnt"},
        "async": False,
    }


@respx.mock
async def test_problems_become_domain_errors() -> None:
    respx.post(f"{API}/runs").mock(
        return_value=problem(
            "validation-error",
            400,
            "bad args",
            errors=[{"path": "/args/target", "message": "'target' is required"}],
        )
    )
    respx.get(f"{API}/runs/run_9").mock(return_value=problem("run-not-found", 404, "no run_9"))
    respx.post(f"{API}/runs/run_1/cancel").mock(
        return_value=problem("run-not-cancellable", 409, "already success")
    )
    respx.get(f"{API}/runs").mock(return_value=problem("queue-full", 429, "full", retry_after=4))
    async with FlwdClient(BASE + "/api/v1/") as client:
        with pytest.raises(errors.ArgumentsInvalid) as invalid:
            await client.create_run("backup/daily")
        assert invalid.value.errors == [
            errors.FieldError(path="/target", message="'target' is required")
        ]
        with pytest.raises(errors.RunNotFound) as missing:
            await client.get_run("run_9")
        assert missing.value.run_id == "run_9" and missing.value.detail == "no run_9"
        with pytest.raises(errors.RunNotCancellable):
            await client.cancel_run("run_1")
        with pytest.raises(errors.QueueFull) as full:
            await client.list_runs()
        assert full.value.retry_after == 4


@respx.mock
async def test_unknown_problems_and_non_json_errors_are_client_errors() -> None:
    respx.get(f"{API}/runs/a").mock(return_value=problem("too-many-requests", 429, "slow down"))
    respx.get(f"{API}/runs/b").mock(return_value=httpx.Response(502, text="<html>bad gateway"))
    async with FlwdClient(BASE) as client:
        with pytest.raises(ClientError) as limited:
            await client.get_run("a")
        assert limited.value.status == 429 and limited.value.detail == "slow down"
        with pytest.raises(ClientError) as gateway:
            await client.get_run("b")
        assert gateway.value.status == 502 and "bad gateway" in gateway.value.detail


@respx.mock
async def test_connection_failure_is_readable() -> None:
    respx.get(f"{API}/runs/x").mock(side_effect=httpx.ConnectError("refused"))
    async with FlwdClient(BASE) as client:
        with pytest.raises(ClientError, match=r"cannot reach flwd at http://127\.0\.0\.1:9"):
            await client.get_run("x")


@respx.mock
async def test_follow_events_resumes_with_last_event_id_after_a_drop() -> None:
    line_a = {"message": "a", "level": "info"}
    line_b = {"message": "b", "level": "info"}
    route = respx.get(f"{API}/runs/run_1/events").mock(
        side_effect=[
            sse((1, "run.created", {}), (2, "run.output", line_a)),
            httpx.ConnectError("dropped"),
            sse((3, "run.output", line_b), (4, "run.finished", {"status": "success"})),
        ]
    )
    async with FlwdClient(BASE) as client:
        client.reconnect_delay = 0.0
        events = [event async for event in client.follow_events("run_1")]
    assert [e.id for e in events] == [1, 2, 3, 4]
    assert events[1].data == {"message": "a", "level": "info"}
    assert events[3].type == "run.finished"
    assert "last-event-id" not in route.calls[0].request.headers
    assert route.calls[1].request.headers["last-event-id"] == "2"
    assert route.calls[2].request.headers["last-event-id"] == "2"


@respx.mock
async def test_follow_events_gives_up_after_bounded_retries() -> None:
    respx.get(f"{API}/runs/run_1/events").mock(side_effect=httpx.ConnectError("down"))
    async with FlwdClient(BASE) as client:
        client.reconnect_delay = 0.0
        client.max_reconnects = 2
        with pytest.raises(ClientError, match="cannot reach"):
            _ = [event async for event in client.follow_events("run_1")]


@respx.mock
async def test_download_streams_to_a_directory_under_the_served_name(
    tmp_path: pathlib.Path,
) -> None:
    respx.get(f"{API}/artifacts/artifact_1").mock(
        return_value=httpx.Response(
            200,
            content=b"x" * 200_000,
            headers={"Content-Disposition": 'attachment; filename="../../evil.bin"'},
        )
    )
    respx.get(f"{API}/artifacts/artifact_2").mock(
        return_value=problem("artifact-not-found", 404, "no artifact_2")
    )
    async with FlwdClient(BASE) as client:
        path = await client.download_artifact("artifact_1", tmp_path)
        with pytest.raises(errors.ArtifactNotFound):
            await client.download_artifact("artifact_2", tmp_path / "x.bin")
    assert path == tmp_path / "evil.bin"
    assert path.read_bytes() == b"x" * 200_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.bin"]


def log_sse(*frames: tuple[int, str], end: bool) -> httpx.Response:
    lines = []
    for event_id, message in frames:
        line = {
            "id": event_id,
            "timestamp": "2024-01-15T10:30:01Z",
            "level": "info",
            "message": message,
            "step_id": "main",
        }
        lines.append(f"id: {event_id}\nevent: log\ndata: {httpx.Response(200, json=line).text}\n\n")
    if end:
        lines.append('event: end\ndata: {"run_id": "run_1", "status": "success"}\n\n')
    return httpx.Response(200, text="".join(lines), headers={"Content-Type": "text/event-stream"})


def test_all_is_sorted_and_complete() -> None:
    import flwd.client as module

    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert module.__all__ == sorted(module.__all__)
    assert public <= set(module.__all__)
    assert {"FlwdClient", "ClientError", "find_local_server", "ServerInfo"} <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


@respx.mock
async def test_job_problems_carry_the_requested_id() -> None:
    respx.get(f"{API}/jobs/backup/monthly").mock(
        return_value=problem("job-not-found", 404, "no monthly")
    )
    respx.get(f"{API}/jobs/broken").mock(
        return_value=problem(
            "job-invalid", 422, "broken job", errors=[{"path": "", "message": "bad YAML"}]
        )
    )
    respx.get(f"{API}/ready").mock(return_value=problem("not-ready", 503, "store"))
    async with FlwdClient(BASE) as client:
        with pytest.raises(errors.JobNotFound) as missing:
            await client.get_job("backup/monthly")
        assert missing.value.job_id == "backup/monthly" and missing.value.detail == "no monthly"
        with pytest.raises(errors.JobNotRunnable) as broken:
            await client.get_job("broken")
        assert broken.value.reasons == ["bad YAML"] and broken.value.job_id == "broken"
        with pytest.raises(ClientError) as not_ready:
            await client.ready()
        assert (not_ready.value.slug, not_ready.value.status) == ("not-ready", 503)


@respx.mock
async def test_an_answer_of_the_wrong_shape_is_a_client_error() -> None:
    respx.get(f"{API}/health").mock(return_value=httpx.Response(200, json={"up": True}))
    async with FlwdClient(BASE) as client:
        with pytest.raises(ClientError, match="unexpected answer from GET /health"):
            await client.health()


@respx.mock
async def test_iter_runs_walks_every_page_once() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        ids = [f"run_{i}" for i in range(offset, min(offset + 2, 5))]
        return httpx.Response(200, json={"runs": [{**RUN, "run_id": i} for i in ids], "total": 5})

    route = respx.get(f"{API}/runs").mock(side_effect=page)
    async with FlwdClient(BASE) as client:
        ids = [run.run_id async for run in client.iter_runs(job_id="backup/daily", page_size=2)]
    assert ids == [f"run_{i}" for i in range(5)]
    assert [c.request.url.params["offset"] for c in route.calls] == ["0", "2", "4"]
    assert route.calls[0].request.url.params["job_id"] == "backup/daily"


@respx.mock
async def test_follow_logs_resumes_and_stops_at_the_end_frame() -> None:
    route = respx.get(f"{API}/runs/run_1/logs").mock(
        side_effect=[
            log_sse((5, "one"), end=False),  # the server closed before the end
            httpx.ReadError("dropped"),
            log_sse((6, "two"), end=True),
        ]
    )
    async with FlwdClient(BASE) as client:
        client.reconnect_delay = 0.0
        lines = [line async for line in client.follow_logs("run_1")]
    assert [(line.id, line.message, line.step_id) for line in lines] == [
        (5, "one", "main"),
        (6, "two", "main"),
    ]
    assert all(c.request.url.params["follow"] == "true" for c in route.calls)
    assert "last-event-id" not in route.calls[0].request.headers
    assert route.calls[2].request.headers["last-event-id"] == "5"


@respx.mock
async def test_stream_events_resumes_from_the_last_event_and_retries_a_restart() -> None:
    route = respx.get(f"{API}/events/runs").mock(
        side_effect=[
            sse((7, "run.created", {}), (8, "run.started", {})),
            problem("not-ready", 503, "restarting"),
            sse((9, "run.finished", {"status": "success"})),
        ]
    )
    async with FlwdClient(BASE) as client:
        client.reconnect_delay = 0.0
        events = []
        async for event in client.stream_events(job_id="backup/daily", since=6):
            events.append(event)
            if len(events) == 3:
                break
    assert [e.id for e in events] == [7, 8, 9]
    assert [c.request.headers["last-event-id"] for c in route.calls] == ["6", "8", "8"]
    assert route.calls[0].request.url.params["job_id"] == "backup/daily"


@respx.mock
async def test_a_stream_of_a_missing_run_fails_at_once() -> None:
    route = respx.get(f"{API}/runs/run_9/events").mock(
        return_value=problem("run-not-found", 404, "no run_9")
    )
    async with FlwdClient(BASE) as client:
        with pytest.raises(errors.RunNotFound) as missing:
            _ = [event async for event in client.follow_events("run_9")]
    assert missing.value.run_id == "run_9" and route.call_count == 1


@respx.mock
async def test_a_stream_that_is_not_sse_gives_up_after_bounded_retries() -> None:
    route = respx.get(f"{API}/runs/run_1/events").mock(
        return_value=httpx.Response(200, text="<html>", headers={"Content-Type": "text/html"})
    )
    async with FlwdClient(BASE) as client:
        client.reconnect_delay = 0.0
        client.max_reconnects = 2
        with pytest.raises(ClientError, match="not an event stream"):
            _ = [event async for event in client.follow_events("run_1")]
    assert route.call_count == 3


@respx.mock
async def test_download_to_a_path_ending_in_a_slash_makes_that_directory(
    tmp_path: pathlib.Path,
) -> None:
    respx.get(f"{API}/artifacts/artifact_1").mock(
        return_value=httpx.Response(
            200, content=b"abc", headers={"Content-Disposition": 'attachment; filename="r.csv"'}
        )
    )
    async with FlwdClient(BASE) as client:
        path = await client.download_artifact("artifact_1", f"{tmp_path}/new/")
    assert path == tmp_path / "new" / "r.csv" and path.read_bytes() == b"abc"
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
