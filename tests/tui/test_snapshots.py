"""Screenshots of every screen, rendered from the fixed data of `fake_api` (fixed ids,
times, lines and clock) and compared with the SVGs under `snapshots/` — Textual's own
export (`App.export_screenshot`), since `pytest-textual-snapshot` needs pytest < 9.

`FLWD_UPDATE_SNAPSHOTS=1` rewrites them (and the copies under `docs/tui/` that
docs/tui.md shows); look at the diff before committing it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
import respx
from flwd_tui.app import FlwdTui
from flwd_tui.screens.help import HelpScreen
from flwd_tui.screens.jobs import JobsScreen
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.run_form import RunFormScreen
from flwd_tui.screens.runs import RunsScreen
from textual.widgets import DataTable, Tree

from flwd.client import FlwdClient
from tests.tui.conftest import until
from tests.tui.fake_api import BASE, NOW, RUN_ID, mock_api

SNAPSHOTS = Path(__file__).parent / "snapshots"
DOCS = Path(__file__).parents[2] / "docs" / "tui"
#: Big enough to read in the docs; the 80x24 promise is checked by test_small_terminal.
SHOT_SIZE = (100, 30)
UPDATE = os.environ.get("FLWD_UPDATE_SNAPSHOTS") == "1"


def normalise(svg: str) -> str:
    # Rich names the SVG's CSS classes after a hash of the content; equal content gives
    # equal names, but keep the comparison about what is drawn, not about the names.
    return re.sub(r"terminal-\d+", "terminal", svg)


def compare(app: FlwdTui, name: str) -> None:
    svg = app.export_screenshot(title=f"flwd tui — {name}")
    path = SNAPSHOTS / f"{name}.svg"
    if UPDATE or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg)
        DOCS.mkdir(exist_ok=True)
        (DOCS / f"{name}.svg").write_text(svg)
        if not UPDATE:
            pytest.fail(f"wrote the missing snapshot {path}: check it and commit it")
        return
    want, got = normalise(path.read_text()), normalise(svg)
    if want != got:
        diff = "\n".join(
            list(difflib.unified_diff(want.splitlines(), got.splitlines(), lineterm=""))[:40]
        )
        pytest.fail(f"{name} differs from {path} (FLWD_UPDATE_SNAPSHOTS=1 rewrites it):\n{diff}")


def fixed_app(client: FlwdClient) -> FlwdTui:
    app = FlwdTui(client, server_label="http://flwd.test:8080", live=False, clock=lambda: NOW)
    app.animation_level = "none"  # a tab's underline would be caught mid-slide
    return app


def tree_loaded(app: FlwdTui) -> bool:
    return isinstance(app.screen, JobsScreen) and bool(app.screen.query_one(Tree).root.children)


async def test_screens_match_their_snapshots() -> None:
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        async with FlwdClient(BASE) as client:
            app = fixed_app(client)
            async with app.run_test(size=SHOT_SIZE) as pilot:
                await until(pilot, lambda: tree_loaded(app))
                await pilot.press("down", "down", "down", "down", "down")
                await pilot.pause()
                compare(app, "jobs")

                app.push_screen(RunFormScreen("backup/daily"))
                await until(
                    pilot, lambda: isinstance(app.screen, RunFormScreen) and app.screen.fields
                )
                await pilot.press("ctrl+s")  # `target` and `password` are required
                await pilot.pause()
                compare(app, "run-form")
                app.screen.query_one("#form").scroll_end(animate=False)
                await pilot.pause()
                compare(app, "run-form-end")
                await pilot.press("escape")

                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, RunsScreen))
                table = app.screen.query_one(DataTable)
                await until(pilot, lambda: table.row_count > 0)
                await pilot.pause()
                compare(app, "runs")

                app.open_run(RUN_ID)
                await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run)
                screen = app.screen
                await until(pilot, lambda: len(screen.window.lines) > 0)
                await pilot.pause()
                compare(app, "run-log")
                await pilot.press("2")
                await pilot.pause()
                compare(app, "run-steps")
                await pilot.press("4")
                await pilot.pause()
                compare(app, "run-artifacts")

                await pilot.press("question_mark")
                await until(pilot, lambda: isinstance(app.screen, HelpScreen))
                await pilot.pause()
                compare(app, "help")
