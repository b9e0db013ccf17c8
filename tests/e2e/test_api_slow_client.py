"""A follower that stops reading while a run floods output: the server cuts it off instead
of holding its backlog, the follower resumes with `Last-Event-ID` and misses nothing, and
a follower that keeps reading is not affected."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.sse import Frame, read_frames

pytestmark = pytest.mark.e2e

MEGABYTES = 40  # well past the 16 MiB a subscriber may have queued, plus socket buffers


def _frames_of(body: bytes) -> list[dict[str, str]]:
    """SSE frames with an id, from a de-chunked body (comments dropped; a frame cut short
    by a reset connection is not a frame)."""
    frames = []
    for block in body.split(b"\n\n")[:-1]:
        fields = dict(
            line.decode().partition(": ")[::2]
            for line in block.split(b"\n")
            if line and not line.startswith(b":")
        )
        if "id" in fields:
            frames.append(fields)
    return frames


class RawFollower:
    """An SSE client on a plain socket, so the test decides when it reads."""

    def __init__(self, port: int, path: str, last_id: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        resume = "" if last_id is None else f"Last-Event-ID: {last_id}\r\n"
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{resume}\r\n".encode())
        self.raw = b""

    def read_until(self, needle: bytes, deadline: float) -> None:
        while needle not in self.raw:
            assert time.monotonic() < deadline, "no such bytes in time"
            data = self.sock.recv(65536)
            assert data, "closed early"
            self.raw += data

    def read_to_end(self, deadline: float) -> list[dict[str, str]]:
        """Every whole frame until the stream ends or the server cuts the connection."""
        self.complete = False
        while not self.raw.endswith(b"0\r\n\r\n"):
            assert time.monotonic() < deadline, "stream did not end in time"
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not data:
                break
            self.raw += data
        self.sock.close()
        head, _, chunked = self.raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        body, pos = [], 0
        while (eol := chunked.find(b"\r\n", pos)) >= 0:
            size = int(chunked[pos:eol], 16)
            if size == 0:
                self.complete = True
                break
            body.append(chunked[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2
        return _frames_of(b"".join(body))


def test_a_stalled_follower_is_cut_off_resumes_and_others_are_unaffected(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path, FLWD_OUTPUT_HEAD_BYTES=str(200 * 2**20))
    gate = tmp_path / "gate"
    flood = server.jobs / "flood"
    flood.mkdir()
    command = (
        f"while [ ! -e {gate} ]; do sleep 0.02; done; "
        f"head -c {MEGABYTES * 1_000_000} /dev/zero | tr '\\0' x | fold -w 999"
    )
    (flood / "config.yaml").write_text(json.dumps({"command": command}))
    server.start()
    try:
        assert server.proc is not None
        ps = psutil.Process(server.proc.pid)
        deadline = time.monotonic() + 60
        with server.client() as http:
            run_id = http.post("/runs", json={"job_id": "flood"}).json()["run_id"]
            path = f"/runs/{run_id}/events"
            stalled = RawFollower(server.port, "/api/v1" + path)
            stalled.read_until(b"event: run.created", deadline)  # subscribed; now it stalls
            steady: list[Frame] = []

            def read_everything() -> None:
                # A real client: resumes if it ever falls too far behind itself.
                with server.client() as client:
                    for _ in range(20):
                        resume = {"Last-Event-ID": steady[-1]["id"]} if steady else {}
                        steady.extend(
                            read_frames(client, path, headers=resume, limit=10**6, timeout=60)
                        )
                        if steady and steady[-1]["event"] == "run.finished":
                            return

            reader = threading.Thread(target=read_everything)
            reader.start()
            rss_before = ps.memory_info().rss
            gate.touch()
            peak = rss_before
            while http.get(f"/runs/{run_id}").json()["status"] not in ("success", "failed"):
                assert time.monotonic() < deadline, "the flood did not finish"
                peak = max(peak, ps.memory_info().rss)
                time.sleep(0.05)
            reader.join(60)
            assert not reader.is_alive()

            cut = stalled.read_to_end(deadline)  # the backlog in socket buffers, then the end
            assert cut[-1]["event"] != "run.finished", "expected the stalled follower cut off"
            resumed = RawFollower(server.port, "/api/v1" + path, last_id=cut[-1]["id"])
            rest = resumed.read_to_end(deadline)

            replay = RawFollower(server.port, "/api/v1" + path).read_to_end(deadline)

        stored = [int(f["id"]) for f in replay]
        assert [int(f["id"]) for f in steady] == stored  # the reading follower got it all
        outputs = [f for f in replay if f["event"] == "run.output"]
        total = MEGABYTES * 1_000_000
        assert len(outputs) == total // 999 + (total % 999 > 0)  # 999-char lines, and the rest
        assert [int(f["id"]) for f in cut + rest] == stored  # nothing lost, nothing twice
        # Backlogs were not held: the server grew far less than the 40 MB it streamed to
        # the stalled follower's subscription.
        assert peak - rss_before < 100 * 2**20, (peak - rss_before) / 2**20
    finally:
        server.stop()
