"""Error paths against a respx-mocked API: a refused token (401), a missing run (404), a
server that is gone and comes back, server-side validation errors beside their fields;
and the stream keeper resuming after the last event id without losing or repeating one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx
from flwd_tui import connection
from flwd_tui.app import FlwdTui
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.run_form import RunFormScreen
from flwd_tui.widgets.form_fields import FieldBox
from textual.widgets import Input, Static, TextArea

from flwd.client import FlwdClient
from flwd.models import Event
from tests.tui.conftest import SIZE, until
from tests.tui.fake_api import API, BASE, NOW, mock_api
from tests.unit.test_client import problem, sse


def no_wait(monkeypatch: Any) -> None:
    monkeypatch.setattr(connection, "FIRST_RETRY_DELAY", 0.01)
    monkeypatch.setattr(connection, "MAX_RETRY_DELAY", 0.05)
    monkeypatch.setattr(FlwdClient, "reconnect_delay", 0.01)


async def test_a_refused_token_shows_on_the_status_line(monkeypatch: Any) -> None:
    no_wait(monkeypatch)
    refused = problem("unauthorized", 401, "missing or invalid bearer token")
    with respx.mock(assert_all_called=False) as router:
        router.route(host="flwd.test").mock(return_value=refused)
        async with FlwdClient(BASE, token="wrong") as client:
            app = FlwdTui(client, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: "refuses the token" in app.connection)
                assert not app.connected
                status = app.screen.query_one("#status", Static)
                assert "refuses the token" in str(status.render())
                assert status.has_class("-down")
        sent = [call.request.headers.get("authorization") for call in router.calls]
        assert sent and set(sent) == {"Bearer wrong"}


async def test_a_missing_run_is_said_not_crashed_on() -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        gone = problem("run-not-found", 404, "Run 'run_nope' does not exist")
        router.get(f"{API}/runs/run_nope").mock(return_value=gone)
        router.get(f"{API}/runs/run_nope/logs").mock(return_value=gone)
        async with FlwdClient(BASE) as client:
            app = FlwdTui(client, live=False, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                app.open_run("run_nope")
                await until(pilot, lambda: isinstance(app.screen, RunScreen))
                screen = app.screen
                assert isinstance(screen, RunScreen)
                await until(pilot, lambda: "does not exist" in str(screen.header.render()))
                await pilot.press("escape")
                assert not isinstance(app.screen, RunScreen)


async def test_a_server_that_goes_away_and_comes_back(monkeypatch: Any) -> None:
    no_wait(monkeypatch)
    up = asyncio.Event()

    def health(request: httpx.Request) -> httpx.Response:
        if not up.is_set():
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"status": "ok", "version": "0", "uptime_seconds": 1})

    def stream(request: httpx.Request) -> httpx.Response:
        if not up.is_set():
            raise httpx.ConnectError("connection refused", request=request)
        return sse()  # an empty stream: the keeper opens it again, the server being up

    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        router.get(f"{API}/health").mock(side_effect=health)
        router.get(f"{API}/events/runs").mock(side_effect=stream)
        router.get(f"{API}/events/jobs").mock(side_effect=stream)
        async with FlwdClient(BASE) as client:
            app = FlwdTui(client, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: "unreachable" in app.connection)
                assert not app.connected
                up.set()
                await until(pilot, lambda: app.connected and app.connection == "connected")


async def test_server_validation_errors_go_beside_their_fields() -> None:
    invalid = problem(
        "validation-error",
        400,
        "Invalid arguments for job 'backup/daily'",
        errors=[
            {"path": "/args/target", "message": "no such host: nowhere"},
            {"path": "/args/db/port", "message": "port 5 is reserved"},
            {"path": "/args", "message": "deploys are frozen today"},
        ],
    )
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        create = router.post(f"{API}/runs").mock(return_value=invalid)
        async with FlwdClient(BASE) as client:
            app = FlwdTui(client, live=False, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                app.push_screen(RunFormScreen("backup/daily"))
                await until(
                    pilot, lambda: isinstance(app.screen, RunFormScreen) and app.screen.fields
                )
                form = app.screen
                assert isinstance(form, RunFormScreen)
                boxes = {box.field.pointer: box for box in form.query(FieldBox)}

                def error_of(pointer: str) -> str:
                    return str(boxes[pointer].query_one(".field-error", Static).render())

                assert boxes["/password"].query_one(Input).password  # masked
                # a JSON field is checked as it is typed
                extra = boxes["/extra"].query_one(TextArea)
                extra.text = "{not json"
                await until(pilot, lambda: "not JSON" in error_of("/extra"))
                extra.text = '{"k": 1}'
                await until(pilot, lambda: error_of("/extra") == "")
                boxes["/target"].query_one(Input).value = "nowhere"
                boxes["/password"].query_one(Input).value = "s3cret-key"
                boxes["/db/port"].query_one(Input).value = "5"
                await pilot.press("ctrl+s")
                await until(pilot, lambda: create.called)

                await until(pilot, lambda: "no such host" in error_of("/target"))
                assert "port 5 is reserved" in error_of("/db/port")
                general = str(form.query_one("#form-error", Static).render())
                assert "deploys are frozen today" in general
                assert isinstance(app.screen, RunFormScreen)  # no run: the form stays
        body = create.calls.last.request.content
        assert b'"target":"nowhere"' in body and b'"port":5' in body
        assert b'"extra":{"k":1}' in body


async def test_the_keeper_resumes_after_the_last_event_without_loss_or_repeat(
    monkeypatch: Any,
) -> None:
    no_wait(monkeypatch)
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:
            return sse((1, "run.created", {}), (2, "run.started", {}))
        if len(asked) == 2:
            raise httpx.ReadError("connection reset", request=request)
        return sse((3, "run.finished", {"status": "success"}))

    got: list[int] = []
    reports: list[tuple[bool, str]] = []
    with respx.mock:
        respx.get(f"{API}/events/runs").mock(side_effect=answer)
        async with FlwdClient(BASE) as client:
            client.max_reconnects = 0
            keeper: connection.StreamKeeper[Event] = connection.StreamKeeper(
                lambda since: client.stream_events(since=since),
                lambda event: event.id,
                lambda event: got.append(event.id),
                lambda ok, detail: reports.append((ok, detail)),
            )
            task = asyncio.create_task(keeper.run())
            for _ in range(400):
                if 3 in got:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
    assert got == [1, 2, 3]
    assert asked[:3] == [None, "2", "2"]
    # the drop was told to the status line, and so was the recovery
    first_failure = next(i for i, (ok, _) in enumerate(reports) if not ok)
    assert (True, "connected") in reports[first_failure:]


async def test_the_keeper_stops_on_a_missing_run_instead_of_retrying(monkeypatch: Any) -> None:
    no_wait(monkeypatch)
    reports: list[tuple[bool, str]] = []
    with respx.mock:
        route = respx.get(f"{API}/runs/run_gone/logs").mock(
            return_value=problem("run-not-found", 404, "Run 'run_gone' does not exist")
        )
        async with FlwdClient(BASE) as client:
            keeper: connection.StreamKeeper[Any] = connection.StreamKeeper(
                lambda since: client.follow_logs("run_gone", since=since),
                lambda line: line.id,
                lambda line: None,
                lambda ok, detail: reports.append((ok, detail)),
            )
            await asyncio.wait_for(keeper.run(until_end=True), timeout=10)
            assert route.call_count == 1
    assert reports == []  # not a connection problem: the status line is left alone
