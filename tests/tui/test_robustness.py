"""Nothing breaks at 80x24 on an empty catalogue, a job without arguments or a log of a
million lines (the window stays bounded and pages from the API); every action of a screen
is in the command palette; the help lists the bindings."""

from __future__ import annotations

from typing import Any

import httpx
import respx
from flwd_tui.app import FlwdTui
from flwd_tui.logwindow import WINDOW_LINES
from flwd_tui.screens.help import help_text
from flwd_tui.screens.jobs import JobsScreen
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.run_form import RunFormScreen
from flwd_tui.screens.runs import RunsScreen
from textual.widgets import Tree

from flwd.client import FlwdClient
from tests.tui.conftest import SIZE, until
from tests.tui.fake_api import API, BASE, NOW, RUN_ID, mock_api

MILLION = 1_000_000


def million_lines(request: httpx.Request) -> httpx.Response:
    """A logs endpoint over lines 1..1,000,000 (ids equal to their number)."""
    params = request.url.params
    if "tail" in params:
        first = MILLION - int(params["tail"]) + 1
        ids = range(max(first, 1), MILLION + 1)
    else:
        since = int(params.get("since", "0"))
        ids = range(since + 1, min(since + int(params.get("limit", "1000")), MILLION) + 1)
    logs = [
        {"id": i, "timestamp": "2026-11-29T12:00:05Z", "level": "info", "message": f"row {i}"}
        for i in ids
    ]
    return httpx.Response(200, json={"logs": logs})


def fixed(client: FlwdClient) -> FlwdTui:
    return FlwdTui(client, live=False, clock=lambda: NOW)


async def test_an_empty_catalogue_and_a_job_without_arguments() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{API}/jobs").mock(return_value=httpx.Response(200, json={"jobs": []}))
        noop: dict[str, Any] = {"id": "noop", "name": "noop", "namespace": "", "source": "x"}
        router.get(f"{API}/jobs/noop").mock(return_value=httpx.Response(200, json=noop))
        async with FlwdClient(BASE) as client:
            app = fixed(client)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.loaded)
                tree = app.screen.query_one(Tree)
                assert "no jobs" in str(tree.root.children[0].label)
                await pilot.press("enter", "slash", "x", "escape")  # nothing to open or filter
                app.push_screen(RunFormScreen("noop"))
                await until(pilot, lambda: isinstance(app.screen, RunFormScreen) and app.screen.job)
                await pilot.pause()
                notes = [str(w.render()) for w in app.screen.query(".form-note")]
                assert notes == ["This job takes no arguments."]


async def test_a_million_line_log_keeps_a_bounded_window() -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        router.get(f"{API}/runs/{RUN_ID}/logs").mock(side_effect=million_lines)  # replaces it
        async with FlwdClient(BASE) as client:
            app = fixed(client)
            async with app.run_test(size=SIZE) as pilot:
                app.open_run(RUN_ID)
                await until(pilot, lambda: isinstance(app.screen, RunScreen))
                screen = app.screen
                assert isinstance(screen, RunScreen)
                await until(pilot, lambda: screen.window.lines, timeout=5)
                await until(pilot, lambda: screen.window.last_id == MILLION)
                assert len(screen.window.lines) == WINDOW_LINES and not screen.window.at_head
                # scrolling to the top of the window pages older lines in from the API
                await until(pilot, lambda: screen.log_view.scroll_y > 0)  # following: at the end
                screen.log_view.scroll_home(animate=False)
                first = MILLION - WINDOW_LINES + 1
                await until(pilot, lambda: (screen.window.first_id or first) < first)
                assert len(screen.window.lines) <= WINDOW_LINES
                assert not screen.window.at_tail
                # the start of the log, then back to its end
                await pilot.press("g")
                await until(pilot, lambda: screen.window.first_id == 1)
                await pilot.press("G")
                await until(pilot, lambda: screen.window.last_id == MILLION)
                assert screen.window.at_tail and len(screen.log_view.lines) <= WINDOW_LINES
                # search within the window jumps to the line
                await pilot.press("slash", *"row 999990", "enter")
                assert screen.window.lines[screen.match].message == "row 999990"


async def test_every_screen_action_is_in_the_command_palette() -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        async with FlwdClient(BASE) as client:
            app = fixed(client)
            async with app.run_test(size=SIZE) as pilot:
                app.open_run(RUN_ID)
                await until(pilot, lambda: isinstance(app.screen, RunScreen))
                await pilot.pause()
                titles = {command.title for command in app.get_system_commands(app.screen)}
                for binding in RunScreen.BINDINGS:
                    assert binding.description in titles  # type: ignore[union-attr]
                assert {"Jobs", "Runs", "Help"} <= titles


def test_the_help_lists_every_binding() -> None:
    text = help_text()
    for screen in (JobsScreen, RunScreen, RunFormScreen):
        for binding in screen.BINDINGS:
            assert binding.description in text  # type: ignore[union-attr]


async def test_ten_thousand_runs_are_loaded_a_page_at_a_time() -> None:
    offsets: list[int] = []

    def page(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        offsets.append(offset)
        runs = [
            {
                "run_id": f"run_{10_000 - n:026d}",
                "job_id": "hello",
                "status": "success",
                "created_at": "2026-11-29T12:00:00Z",
            }
            for n in range(offset, min(offset + limit, 10_000))
        ]
        return httpx.Response(200, json={"runs": runs, "total": 10_000})

    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        router.get(f"{API}/runs").mock(side_effect=page)
        async with FlwdClient(BASE) as client:
            app = fixed(client)
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, RunsScreen))
                screen = app.screen
                assert isinstance(screen, RunsScreen)
                await until(pilot, lambda: len(screen.runs) == 100)
                for loaded in (200, 300):
                    await pilot.press("ctrl+end")  # the last loaded row: the next page comes
                    await until(pilot, lambda n=loaded: len(screen.runs) == n)  # type: ignore[misc]
                assert offsets == [0, 100, 200] and screen.total == 10_000
