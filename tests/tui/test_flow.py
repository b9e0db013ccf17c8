"""The main flow against a real `flwd serve`: pick a job, fill its form, start the run,
watch it finish, read its log and result; cancel a long run; the jobs list follows hot
reload; the runs table follows new runs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from flwd_tui import connection
from flwd_tui.app import FlwdTui
from flwd_tui.screens.dialogs import PathScreen
from flwd_tui.screens.jobs import JobsScreen
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.run_form import RunFormScreen
from flwd_tui.screens.runs import RunsScreen
from flwd_tui.widgets.form_fields import FieldBox
from textual.widgets import DataTable, Input, Static, Tree

from flwd.client import FlwdClient
from tests.e2e.conftest import ServerProcess
from tests.tui.conftest import SIZE, until


def job_ids(app: FlwdTui) -> set[str]:
    tree = app.screen.query_one("#job-tree", Tree)
    return {leaf.data.id for node in tree.root.children for leaf in node.children if leaf.data}


def text_of(widget: Static) -> str:
    return str(widget.render())


async def test_pick_a_job_fill_the_form_and_watch_the_run_finish(tui_client: FlwdClient) -> None:
    app = FlwdTui(tui_client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, JobsScreen) and "hello" in job_ids(app))
        await until(pilot, lambda: app.connected and app.connection == "connected")
        # `/` filters the list down to the job, enter opens its form
        await pilot.press("slash", *"hello", "enter")
        assert job_ids(app) == {"hello"}
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunFormScreen) and app.screen.fields)
        box = app.screen.query_one(FieldBox)
        assert box.field.pointer == "/name"
        field_input = box.query_one(Input)
        assert field_input.value == "world"  # the default, pre-filled
        field_input.focus()
        await pilot.press("end", *["backspace"] * 5, *"tui", "ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run is not None)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await until(pilot, lambda: screen.run is not None and str(screen.run.status) == "success")
        await until(pilot, lambda: any("hello tui" in line.message for line in screen.window.lines))
        result = text_of(screen.query_one("#result-view", Static))
        assert json.loads(result)["value"] == {"greeting": "hello tui"}
        await pilot.press("2")  # the steps tab: the one step, done
        assert "✔ main" in text_of(screen.query_one("#step-graph", Static))


async def test_cancel_a_long_run_after_confirming(tui_client: FlwdClient) -> None:
    run = await tui_client.create_run("demo/sleeper")
    app = FlwdTui(tui_client)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run.run_id)
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run is not None)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await until(pilot, lambda: any("sleeping" in line.message for line in screen.window.lines))
        await pilot.press("c")
        await pilot.press("n")  # said no: still running
        assert str((await tui_client.get_run(run.run_id)).status) == "running"
        await pilot.press("c")
        await pilot.press("y")
        await until(pilot, lambda: screen.run is not None and str(screen.run.status) == "cancelled")
    assert str((await tui_client.get_run(run.run_id)).status) == "cancelled"


async def test_jobs_follow_hot_reload(tui_server: ServerProcess, tui_client: FlwdClient) -> None:
    app = FlwdTui(tui_client)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "hello" in job_ids(app))
        await until(pilot, lambda: app.connected and app.connection == "connected")
        folder = tui_server.jobs / "added-live"
        folder.mkdir()
        (folder / "config.yaml").write_text('{"description": "new", "command": "true"}')
        await until(pilot, lambda: "added-live" in job_ids(app), timeout=20)
        (folder / "config.yaml").unlink()
        folder.rmdir()
        await until(pilot, lambda: "added-live" not in job_ids(app), timeout=20)


async def test_runs_table_shows_new_runs_live(tui_client: FlwdClient) -> None:
    app = FlwdTui(tui_client)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen))
        await until(pilot, lambda: app.connected and app.connection == "connected")
        run = await tui_client.create_run("noop")
        table = app.screen.query_one("#runs-table", DataTable)
        await until(pilot, lambda: run.run_id in {k.value for k in table.rows})
        await until(pilot, lambda: str(table.get_cell(run.run_id, "status")) == "success")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))


async def test_the_server_lists_the_tui_extension(tui_client: FlwdClient) -> None:
    info = await tui_client.system_info()
    assert "tui" in info.extensions


async def test_the_status_line_follows_the_server_going_and_coming_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "MAX_RETRY_DELAY", 0.5)
    server = ServerProcess(tmp_path)
    server.start()
    try:
        async with FlwdClient(server.url) as client:
            app = FlwdTui(client)
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("r")
                await until(pilot, lambda: app.connected and app.connection == "connected")
                server.stop(signal.SIGKILL)  # gone at once, as after a crash
                await until(pilot, lambda: "unreachable" in app.connection, timeout=30)
                assert not app.connected
                server.start()  # same port and data dir
                await until(pilot, lambda: app.connection == "connected", timeout=30)
                # the run events flow again: a new run shows up in the table
                run = await client.create_run("noop")
                table = app.screen.query_one("#runs-table", DataTable)
                await until(pilot, lambda: run.run_id in {k.value for k in table.rows})
    finally:
        server.stop()


async def test_download_an_artifact_and_restart_the_run(
    tui_client: FlwdClient, tmp_path: Path
) -> None:
    run = await tui_client.create_run("report", wait=True)
    app = FlwdTui(tui_client)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run.run_id)
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.artifacts)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("4", "d")
        await until(pilot, lambda: isinstance(app.screen, PathScreen))
        target = tmp_path / "saved.csv"
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: target.exists())
        assert target.read_text() == "a,b\n1,2\n"
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen is not screen)
        restarted = app.screen
        assert isinstance(restarted, RunScreen) and restarted.run_id != run.run_id
        await until(pilot, lambda: restarted.run is not None and restarted.run.job_id == "report")
