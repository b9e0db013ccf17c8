"""A tiny SSE reader for the e2e tests (bounded in time and in frames)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx


class Frame(dict[str, Any]):
    """One SSE frame: `id`, `event`, and `data` decoded from JSON."""


def read_frames(
    client: httpx.Client,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    stop: Callable[[Frame], bool] = lambda frame: False,
    limit: int = 10_000,
    timeout: float = 20.0,
) -> list[Frame]:
    """Frames of `path` until the server ends the stream, `stop(frame)` is true, `limit`
    frames were read, or `timeout` seconds passed (then AssertionError)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    current = Frame()
    with client.stream("GET", path, headers=headers or {}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"no end of stream within {timeout}s: {frames}"
            if line == "":
                if "data" in current:
                    frames.append(current)
                    if stop(current) or len(frames) >= limit:
                        return frames
                current = Frame()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            current[name] = json.loads(value) if name == "data" else value
    return frames
