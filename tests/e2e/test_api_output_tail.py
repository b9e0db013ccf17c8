"""Past a run's head (`FLWD_OUTPUT_HEAD_BYTES`), its output is still followed live over
SSE: a follower sees where the rolling tail begins and the tail's lines while the run goes
on, and the stored log keeps the head, the last part and a count of what was dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import Frame, read_frames

pytestmark = pytest.mark.e2e


def test_a_follower_sees_output_past_the_head_while_the_run_goes_on(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = ServerProcess(tmp_path, FLWD_OUTPUT_HEAD_BYTES="2000", FLWD_OUTPUT_TAIL_BYTES="3000")
    chatty = server.jobs / "chatty"
    chatty.mkdir(parents=True)
    (chatty / "config.yaml").write_text(
        json.dumps(
            {
                "command": (
                    'for i in $(seq 1 40); do seq -f "$i-%g" 1 50; sleep 0.02; done; '
                    f"echo last-burst; while [ ! -e {gate} ]; do sleep 0.05; done; echo done"
                )
            }
        )
    )
    server.start()
    try:
        with server.client() as http:
            run = http.post("/runs", json={"job_id": "chatty", "args": {}}).json()
            run_id = run["run_id"]

            def is_last_burst(frame: Frame) -> bool:
                return (
                    frame.get("event") == "run.output"
                    and frame["data"].get("message") == "last-burst"
                )

            live = read_frames(http, f"/runs/{run_id}/events", stop=is_last_burst, timeout=20)
            # the run was still waiting for the gate: these lines came live
            assert http.get(f"/runs/{run_id}").json()["status"] == "running"
            messages = [f["data"].get("message") for f in live if f.get("event") == "run.output"]
            assert messages[0] == "1-1"
            (begins,) = [m for m in messages if m and m.startswith("[flwd: ")]
            assert begins.startswith("[flwd: the run's output passed 2000 bytes")
            assert messages[-1] == "last-burst"
            assert "40-50" in messages  # the last burst's lines, past the head

            gate.touch()
            rest = read_frames(
                http,
                f"/runs/{run_id}/events",
                headers={"Last-Event-ID": live[-1]["id"]},
                timeout=20,
            )
            assert rest[-1]["event"] == "run.finished"
            tail_end = [f["data"]["message"] for f in rest if f.get("event") == "run.output"]
            assert tail_end[0] == "done"
            assert re.match(r"\[flwd: \d+ lines \(\d+ bytes\) of output were dropped", tail_end[1])

            # stored afterwards: the head, the marker, the last part (not the middle), the end
            logs = http.get(f"/runs/{run_id}/logs").json()
            lines = [line["message"] for line in logs["logs"]]
            assert lines[0] == "1-1" and lines[-2:] == tail_end
            assert "20-25" not in lines and "40-50" in lines
    finally:
        server.stop()
