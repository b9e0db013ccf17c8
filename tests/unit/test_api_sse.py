"""SSE framing and the run event/log streams over an in-memory backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from flwd.api.sse import (
    MAX_CHUNK,
    RUN_FINISHED,
    _FrameCache,
    event_bytes,
    event_chunks,
    event_frame,
    event_payload,
    log_frame,
    log_line,
    parse_resume_id,
)
from flwd.events.bus import SlowConsumer
from flwd.models import Event
from tests.api_support import FakeRunService

Client = AsyncTestClient[Litestar]
STAMP = datetime(2024, 1, 15, 10, 30, 1, tzinfo=UTC)


def output_event(**data: object) -> Event:
    return Event(
        id=42,
        type="run.output",
        run_id="run_1",
        job_id="backup/daily",
        timestamp=STAMP,
        data={"level": "info", "message": "Processing...", "step_id": "s1", **data},
    )


def frames(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into frames (comments dropped)."""
    parsed = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            parsed.append(fields)
    return parsed


def test_event_frame_matches_the_contract_example() -> None:
    encoded = event_frame(output_event()).encode().decode()
    assert encoded.startswith("id: 42\nevent: run.output\ndata: {")
    payload = json.loads(encoded.split("data: ", 1)[1])
    assert payload == {
        "id": 42,
        "type": "run.output",
        "run_id": "run_1",
        "job_id": "backup/daily",
        "timestamp": "2024-01-15T10:30:01Z",
        "level": "info",
        "message": "Processing...",
        "step_id": "s1",
    }


def test_event_data_cannot_override_the_envelope() -> None:
    payload = event_payload(output_event(id=1, run_id="other"))
    assert payload["id"] == 42 and payload["run_id"] == "run_1"


def test_multiline_messages_stay_one_data_line() -> None:
    encoded = log_frame(log_line(output_event(message="a\nb"))).encode().decode()
    assert encoded.count("data: ") == 1
    assert '"message":"a\\nb"' in encoded


@pytest.mark.parametrize(
    ("header", "since", "expected"),
    [(None, None, None), ("7", None, 7), ("7", "3", 7), (None, "3", 3), ("", "0", 0)],
)
def test_resume_id_prefers_last_event_id(
    header: str | None, since: str | None, expected: int | None
) -> None:
    assert parse_resume_id(header, since) == expected


def test_resume_id_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_resume_id("abc", None)
    with pytest.raises(ValueError):
        parse_resume_id(None, "-1")


async def _finished_run(service: FakeRunService) -> str:
    run = await service.create_run("hello", {})
    await service.output(run.run_id, "one")
    await service.output(run.run_id, "two")
    await service.finish(run.run_id)
    return run.run_id


async def test_run_events_stream_replays_and_ends_after_finish(
    api_client: Client, api_service: FakeRunService
) -> None:
    run_id = await _finished_run(api_service)
    response = await api_client.get(f"/api/v1/runs/{run_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    got = frames(response.text)
    assert [(f["id"], f["event"]) for f in got] == [
        ("1", "run.created"),
        ("2", "run.output"),
        ("3", "run.output"),
        ("4", "run.finished"),
    ]
    assert json.loads(got[3]["data"])["status"] == "success"
    resumed = await api_client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "2"})
    assert [f["id"] for f in frames(resumed.text)] == ["3", "4"]


async def test_log_stream_of_a_finished_run_replays_then_ends(
    api_client: Client, api_service: FakeRunService
) -> None:
    run_id = await _finished_run(api_service)
    response = await api_client.get(f"/api/v1/runs/{run_id}/logs?follow=true&since=2")
    got = frames(response.text)
    assert [f["event"] for f in got] == ["log", "end"]
    assert json.loads(got[0]["data"])["message"] == "two"
    assert got[0]["id"] == "3"
    assert json.loads(got[1]["data"]) == {"run_id": run_id, "status": "success"}


async def test_bad_last_event_id_is_a_validation_problem(
    api_client: Client, api_service: FakeRunService
) -> None:
    run_id = await _finished_run(api_service)
    response = await api_client.get(
        f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "yesterday"}
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"path": "/Last-Event-ID", "message": "must be a non-negative integer", "in": "header"}
    ]


async def test_streams_of_unknown_runs_are_problems(api_client: Client) -> None:
    for path in ("/api/v1/runs/run_x/events", "/api/v1/runs/run_x/logs?follow=true"):
        response = await api_client.get(path)
        assert response.status_code == 404
        assert response.json()["type"] == "https://flowd.org/problems/run-not-found"


def numbered(event_id: int, type_: str = "run.output", message: str = "x") -> Event:
    data = {"level": "info", "message": message, "step_id": "s1"}
    if type_ == RUN_FINISHED:
        data = {"status": "success"}
    return Event(id=event_id, type=type_, run_id="run_1", job_id="j", timestamp=STAMP, data=data)


async def batches_of(
    *batches: list[Event], fail: BaseException | None = None
) -> AsyncIterator[list[Event]]:
    for batch in batches:
        yield batch
    if fail is not None:
        raise fail


async def chunks_of(source: AsyncIterator[list[Event]]) -> list[bytes]:
    return [
        chunk async for chunk in event_chunks(source, event_bytes, lambda e: e.type == RUN_FINISHED)
    ]


async def test_each_batch_is_written_as_one_chunk_until_the_stop_event() -> None:
    events = [numbered(i) for i in range(1, 6)] + [numbered(6, RUN_FINISHED), numbered(7)]
    chunks = await chunks_of(batches_of(events[:3], events[3:]))
    assert len(chunks) == 2  # one send per batch, not per event
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)
    got = frames(b"".join(chunks).decode())
    assert [int(f["id"]) for f in got] == [1, 2, 3, 4, 5, 6]  # nothing after run.finished
    assert got[-1]["event"] == RUN_FINISHED


async def test_a_huge_batch_is_split_at_frame_boundaries() -> None:
    big = [numbered(i, message="y" * 10_000) for i in range(1, 101)]  # ~1 MB of frames
    chunks = await chunks_of(batches_of(big))
    assert len(chunks) > 1
    assert all(len(chunk) < MAX_CHUNK + 20_000 and chunk.endswith(b"\n\n") for chunk in chunks)
    assert [int(f["id"]) for f in frames(b"".join(chunks).decode())] == list(range(1, 101))


async def test_a_slow_consumer_cut_off_ends_the_body_quietly() -> None:
    source = batches_of([numbered(1)], [numbered(2)], fail=SlowConsumer("behind"))
    chunks = await chunks_of(source)
    assert [int(f["id"]) for f in frames(b"".join(chunks).decode())] == [1, 2]


async def test_a_long_batch_is_rendered_one_chunk_at_a_time() -> None:
    rendered: list[int] = []

    def render(event: Event) -> bytes:
        rendered.append(event.id)
        return event_bytes(event)

    big = [numbered(i, message="z" * 10_000) for i in range(1, 201)]  # ~2 MB of frames
    chunks = event_chunks(batches_of(big), render, lambda e: False)
    first = await anext(chunks)
    assert len(first) >= MAX_CHUNK
    assert len(rendered) < 50  # not the whole batch held in memory at once
    rest = [chunk async for chunk in chunks]
    assert [int(f["id"]) for f in frames(b"".join([first, *rest]).decode())] == list(range(1, 201))


def test_the_shared_frame_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = _FrameCache(size=10, max_bytes=50_000)
    for i in range(1, 31):
        frame = cache.get("event", numbered(i, message="w" * 10_000), event_frame)
        assert frame.startswith(f"id: {i}\n".encode())
        assert len(cache._frames) <= 10 and cache.bytes <= 50_000
    assert cache.bytes == sum(len(f) for f in cache._frames.values())
    assert list(cache._frames)[-1] == ("event", 30)  # the newest kept, the oldest dropped


def test_send_timeout_and_buffer_settings_reach_the_listening_socket() -> None:
    import socket

    from flwd.commands.serve import bound_sends
    from flwd.settings import SettingsError, load_settings

    settings = load_settings({"FLWD_SEND_TIMEOUT": "2s", "FLWD_SEND_BUFFER": "65536"})
    assert (settings.send_timeout, settings.send_buffer) == (2.0, 65536)
    assert load_settings({}).send_timeout == 5.0
    for bad in ({"FLWD_SEND_TIMEOUT": "0"}, {"FLWD_SEND_BUFFER": "-1"}):
        with pytest.raises(SettingsError):
            load_settings(bad)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        bound_sends(listener, settings)
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2000
        # the kernel doubles what it is given; accepted connections inherit both
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2000
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
