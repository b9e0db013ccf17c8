"""How responsive `flwd tui` stays on a huge log and a large run store.

Drives the app headless (Textual's `run_test`) at 80x24 against a respx-mocked API that
serves a log of `--lines` lines (ids 1..N) and `--runs` runs, so what is measured is the
TUI (decoding, the window, drawing), not the server. Reports the time each step takes and
the longest stall of the event loop while it ran (a 10 ms ticker's worst lateness): the
app "freezes" when that stall is long.

    .venv/bin/python bench/tui.py [--lines 1000000] [--runs 10000] [--pages 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import respx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwd_tui.app import FlwdTui
from flwd_tui.screens.run import RunScreen
from flwd_tui.screens.runs import RunsScreen

from flwd.client import FlwdClient
from tests.tui.fake_api import API, BASE, NOW, RUN_ID, mock_api


class StallMeter:
    """The worst lateness of a 10 ms ticker on the app's loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - start - 0.01)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
        return self.worst


async def wait_for(check: Callable[[], object], pause: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in 120 s")
        await pause()


async def main(lines: int, runs: int, pages: int) -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if "tail" in params:
            ids = range(max(lines - int(params["tail"]) + 1, 1), lines + 1)
        else:
            since = int(params.get("since", "0"))
            ids = range(since + 1, min(since + int(params.get("limit", "1000")), lines) + 1)
        body = [
            {
                "id": i,
                "timestamp": "2026-11-29T12:00:05Z",
                "level": "info",
                "message": f"line {i} of the benchmark log, some eighty characters wide ......",
            }
            for i in ids
        ]
        return httpx.Response(200, json={"logs": body})

    def run_page(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        body = [
            {
                "run_id": f"run_{runs - n:026d}",
                "job_id": "hello",
                "status": "success",
                "created_at": "2026-11-29T12:00:00Z",
                "started_at": "2026-11-29T12:00:00Z",
                "finished_at": "2026-11-29T12:00:02Z",
                "exit_code": 0,
            }
            for n in range(offset, min(offset + limit, runs))
        ]
        return httpx.Response(200, json={"runs": body, "total": runs})

    meter = StallMeter()
    results: list[tuple[str, float, float]] = []
    with respx.mock(assert_all_called=False) as router:
        mock_api(router)
        router.get(f"{API}/runs/{RUN_ID}/logs").mock(side_effect=logs)
        router.get(f"{API}/runs").mock(side_effect=run_page)
        async with FlwdClient(BASE) as client:
            app = FlwdTui(client, live=False, clock=lambda: NOW)
            async with app.run_test(size=(80, 24)) as pilot:

                async def step(name: str, act: Callable[[], Awaitable[None]]) -> None:
                    meter.start()
                    start = time.perf_counter()
                    await act()
                    results.append((name, time.perf_counter() - start, meter.stop()))

                async def open_runs() -> None:
                    await pilot.press("r")
                    await wait_for(
                        lambda: isinstance(app.screen, RunsScreen) and app.screen.runs, pilot.pause
                    )

                await step(f"open the runs screen ({runs} runs)", open_runs)
                screen = app.screen
                assert isinstance(screen, RunsScreen)

                async def next_page() -> None:
                    loaded = len(screen.runs)
                    await pilot.press("ctrl+end")
                    await wait_for(lambda: len(screen.runs) > loaded, pilot.pause)

                for _ in range(3):
                    await step("next page of runs", next_page)

                async def open_run() -> None:
                    app.open_run(RUN_ID)
                    await wait_for(
                        lambda: (
                            isinstance(app.screen, RunScreen) and app.screen.window.last_id == lines
                        ),
                        pilot.pause,
                    )
                    await pilot.pause()

                await step(f"open a run with a {lines}-line log (tail)", open_run)
                run_screen = app.screen
                assert isinstance(run_screen, RunScreen)
                await wait_for(lambda: run_screen.log_view.scroll_y > 0, pilot.pause)

                async def page_back() -> None:
                    first = run_screen.window.first_id or 0
                    run_screen.log_view.scroll_home(animate=False)
                    await wait_for(lambda: (run_screen.window.first_id or 0) < first, pilot.pause)
                    await pilot.pause()

                for _ in range(pages):
                    await step("scroll back one page (logs_before)", page_back)

                async def jump(key: str, check: Callable[[], bool]) -> None:
                    await pilot.press(key)
                    await wait_for(check, pilot.pause)
                    await pilot.pause()

                await step(
                    "jump to the log's start",
                    lambda: jump("g", lambda: run_screen.window.first_id == 1),
                )
                await step(
                    "jump to the log's end",
                    lambda: jump("G", lambda: run_screen.window.last_id == lines),
                )
                calls = len(router.calls)
    by_name: dict[str, list[tuple[float, float]]] = {}
    for name, took, stall in results:
        by_name.setdefault(name, []).append((took, stall))
    print(f"{'step':<46} {'n':>3} {'time p50':>9} {'max':>8} {'worst stall':>12}")
    for name, values in by_name.items():
        times = sorted(t for t, _ in values)
        stall = max(s for _, s in values)
        print(
            f"{name:<46} {len(values):>3} {times[len(times) // 2] * 1000:>7.0f}ms "
            f"{times[-1] * 1000:>6.0f}ms {stall * 1000:>10.0f}ms"
        )
    print(f"API requests: {calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=20)
    options = parser.parse_args()
    asyncio.run(main(options.lines, options.runs, options.pages))
