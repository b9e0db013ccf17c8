"""`FlwdClient.logs_before`: scrolling back through a log the API pages only forward,
against a mocked logs endpoint (respx) that answers `since`/`limit` like the server."""

from __future__ import annotations

import httpx
import pytest
import respx

from flwd.client import FlwdClient

BASE = "http://127.0.0.1:9"
API = BASE + "/api/v1"


def serve_lines(ids: list[int], calls: list[dict[str, str]]) -> respx.Route:
    """A logs endpoint over lines with these ids (sorted, distinct, not dense)."""

    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        calls.append(params)
        since = int(params.get("since", "0"))
        limit = int(params["limit"])
        page = [i for i in ids if i > since][:limit]
        logs = [
            {"id": i, "timestamp": "2024-01-15T10:30:01Z", "level": "info", "message": f"l{i}"}
            for i in page
        ]
        return httpx.Response(200, json={"logs": logs})

    return respx.get(f"{API}/runs/run_1/logs").mock(side_effect=answer)


@pytest.mark.parametrize(
    ("ids", "before", "count"),
    [
        (list(range(1, 200_001)), 150_000, 1000),  # dense: far more than a page below
        (list(range(5, 3_000_000, 7)), 2_000_002, 500),  # sparse ids (other runs between)
        (list(range(1, 30)), 20, 1000),  # fewer lines than asked: all of them
        ([*range(1, 50_001), *range(10_000_000, 10_000_100)], 10_000_050, 300),  # a gap
    ],
)
async def test_logs_before_returns_the_lines_just_below_in_order(
    ids: list[int], before: int, count: int
) -> None:
    calls: list[dict[str, str]] = []
    with respx.mock:
        serve_lines(ids, calls)
        async with FlwdClient(BASE) as client:
            lines = await client.logs_before("run_1", before, count)
    expected = [i for i in ids if i < before][-count:]
    assert [line.id for line in lines] == expected
    assert len(calls) <= 64


async def test_logs_before_the_first_line_is_empty() -> None:
    calls: list[dict[str, str]] = []
    with respx.mock:
        serve_lines([10, 11, 12], calls)
        async with FlwdClient(BASE) as client:
            assert await client.logs_before("run_1", 10, 100) == []
