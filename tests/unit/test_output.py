"""The output pipeline: lines with levels, over-long lines cut with a marker, a per-run cap
that keeps the head and a rolling tail, shown live, with markers of where the tail begins
and of what was dropped."""

from __future__ import annotations

import random
import re

import pytest

from flwd.engine import output
from flwd.engine.output import _has_line_longer_than
from flwd.events.journal import Journal
from flwd.states import RunStatus
from tests.unit.engine_support import (
    EngineWorld,
    events_of,
    finish,
    output_lines,
    run_job,
    wait_for,
)

pytest_plugins = ["tests.unit.conftest_engine"]


async def test_stdout_is_info_and_stderr_is_error(engine_world: EngineWorld) -> None:
    engine_world.job(
        "both",
        {"steps": [{"id": "s", "run": "echo to-out; echo to-err >&2; printf 'no newline'"}]},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "both")
        logs = await service.read_logs(run.run_id)
        by_message = {line.message: line for line in logs}
        assert set(by_message) == {"to-out", "to-err", "no newline"}
        assert by_message["to-out"].level == "info"
        assert by_message["no newline"].level == "info"
        assert by_message["to-err"].level == "error"
        assert all(line.step_id == "s" for line in logs)
        events = [e for e in await events_of(service, run.run_id) if e.type == "run.output"]
        assert {e.data["stream"] for e in events} == {"stdout", "stderr"}
        # a log line's id is the id of the event it came from
        assert [line.id for line in logs] == [e.id for e in events]


async def test_empty_lines_and_invalid_utf8_are_kept(engine_world: EngineWorld) -> None:
    engine_world.job("odd", {"command": r"printf 'a\n\nb\377c\n'"})
    async with engine_world.open() as service:
        run = await run_job(service, "odd")
        assert [x.message for x in await service.read_logs(run.run_id)] == ["a", "", "b\ufffdc"]


async def test_a_very_long_line_is_cut_with_a_marker(engine_world: EngineWorld) -> None:
    limit = 1000
    engine_world.job(
        "long",
        {
            "command": (
                # one long line that ends, one that never ends, then a normal line
                "head -c 5000 /dev/zero | tr '\\0' a; echo; "
                "head -c 300000 /dev/zero | tr '\\0' b; echo; echo after"
            )
        },
    )
    async with engine_world.open(line_limit=limit) as service:
        run = await run_job(service, "long")
        assert run.status is RunStatus.SUCCESS
        lines = [x.message for x in await service.read_logs(run.run_id)]
        marker = f" [flwd: line cut at {limit} bytes]"
        assert lines == ["a" * limit + marker, "b" * limit + marker, "after"]


async def test_the_run_cap_keeps_head_and_tail_with_markers(engine_world: EngineWorld) -> None:
    head, tail = 4000, 3000
    total_lines = 20000
    engine_world.job(
        "flood",
        {
            "steps": [
                {"id": "one", "run": f"seq -f 'line %06g' 1 {total_lines // 2}"},
                {
                    "id": "two",
                    "needs": "one",
                    "run": f"seq -f 'line %06g' {total_lines // 2 + 1} {total_lines}",
                },
            ]
        },
    )
    async with engine_world.open(output_head_bytes=head, output_tail_bytes=tail) as service:
        run = await run_job(service, "flood")
        assert run.status is RunStatus.SUCCESS
        events = await events_of(service, run.run_id)
        lines = output_lines(events)
        # head, a marker where the tail begins, the tail, and what was dropped at the end
        starts, ends = [i for i, m in enumerate(lines) if m.startswith("[flwd:")]
        assert ends == len(lines) - 1
        kept_head, kept_tail = lines[:starts], lines[starts + 1 : ends]
        line_bytes = len("line 000001\n")
        assert lines[starts] == (
            f"[flwd: the run's output passed {head} bytes; from here on only its last "
            f"{tail} bytes are kept, shown every 1s]"
        )

        # the head: the run's first lines, in order, filling (almost all) its budget
        assert kept_head == [f"line {i:06d}" for i in range(1, len(kept_head) + 1)]
        assert head - line_bytes < len(kept_head) * line_bytes <= head
        # the tail: the run's last lines, in order, at least its budget, in whole chunks
        # (a chunk is one read of a pipe, at most 64 KiB)
        first_tail = total_lines - len(kept_tail) + 1
        assert kept_tail == [f"line {i:06d}" for i in range(first_tail, total_lines + 1)]
        assert tail <= len(kept_tail) * line_bytes < tail + 64 * 1024
        # the last marker says exactly what was dropped
        dropped = total_lines - len(kept_head) - len(kept_tail)
        found = re.search(r"(\d+) lines \((\d+) bytes\).* first (\d+) .* last (\d+) ", lines[ends])
        assert found is not None, lines[ends]
        assert int(found.group(1)) == dropped
        assert int(found.group(2)) == dropped * line_bytes
        assert int(found.group(3)) == len(kept_head) * line_bytes
        assert int(found.group(4)) == len(kept_tail) * line_bytes

        logs = await service.read_logs(run.run_id)
        assert [x.message for x in logs] == lines
        assert logs[starts].level == logs[ends].level == "warning"
        # every step's output, tail included, comes before its step.finished
        for step in ("one", "two"):
            finished = next(
                e.id for e in events if e.type == "step.finished" and e.data["step_id"] == step
            )
            assert all(x.id < finished for x in logs if x.step_id == step)


async def test_output_past_the_head_is_stored_and_shown_while_the_run_goes_on(
    engine_world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "TAIL_FLUSH_INTERVAL", 0.05)
    deleted: list[int] = []
    delete_output = Journal.delete_output

    def recording(self: Journal, rows: list[int]) -> None:
        deleted.extend(rows)
        delete_output(self, rows)

    monkeypatch.setattr(Journal, "delete_output", recording)
    gate = engine_world.root / "gate"
    engine_world.job(
        "chatty",
        {
            "command": (
                'for i in $(seq 1 30); do seq -f "$i-%g" 1 100; sleep 0.02; done; '
                f"echo last-burst; while [ ! -e {gate} ]; do sleep 0.02; done; echo done"
            )
        },
    )
    async with engine_world.open(output_head_bytes=1000, output_tail_bytes=2000) as service:
        run = await service.create_run("chatty", {})

        async def stored_lines() -> list[str]:
            return [x.message for x in await service.read_logs(run.run_id)]

        async def last_burst_stored() -> bool:
            return "last-burst" in await stored_lines()

        # shown within about a flush interval, while the step still runs
        await wait_for(last_burst_stored, timeout=5, what="the tail to be stored")
        assert (await service.get_run(run.run_id)).status is RunStatus.RUNNING
        gate.touch()
        done = await finish(service, run)
        assert done.status is RunStatus.SUCCESS
        logs = await service.read_logs(run.run_id)
        lines = [x.message for x in logs]
        assert lines[-2] == "done"
        assert re.match(r"\[flwd: \d+ lines \(\d+ bytes\) of output were dropped", lines[-1])
        # the middle bursts were stored and published, then deleted by the rolling tail
        assert deleted
        assert not set(deleted) & {x.id for x in logs}
        assert "15-50" not in lines


async def test_output_under_the_cap_is_kept_whole(engine_world: EngineWorld) -> None:
    engine_world.job("some", {"command": "seq 1 500"})
    async with engine_world.open(output_head_bytes=1000, output_tail_bytes=10_000) as service:
        run = await run_job(service, "some")
        lines = [x.message for x in await service.read_logs(run.run_id)]
        # past the head, a marker says where the tail begins; nothing is dropped, so
        # nothing says so at the end
        (marker,) = [line for line in lines if line.startswith("[flwd:")]
        assert marker.startswith("[flwd: the run's output passed 1000 bytes")
        assert [line for line in lines if line != marker] == [str(i) for i in range(1, 501)]


async def test_logs_can_be_read_from_an_id_and_limited(engine_world: EngineWorld) -> None:
    engine_world.job("count", {"command": "seq 1 30"})
    async with engine_world.open() as service:
        run = await run_job(service, "count")
        logs = await service.read_logs(run.run_id)
        assert [x.message for x in logs] == [str(i) for i in range(1, 31)]
        assert [x.id for x in logs] == list(range(logs[0].id, logs[0].id + 30))
        later = await service.read_logs(run.run_id, since_id=logs[9].id)
        assert [x.message for x in later] == [str(i) for i in range(11, 31)]
        page = await service.read_logs(run.run_id, since_id=logs[9].id, limit=5)
        assert [x.message for x in page] == ["11", "12", "13", "14", "15"]
        assert await service.read_logs(run.run_id, since_id=logs[-1].id) == []


def test_the_long_line_check_agrees_with_splitting_into_lines() -> None:
    # the scan jumps a line-limit ahead at a time: every place a line end can fall
    # relative to the jumps, checked against the plain definition
    def by_split(block: bytes, limit: int) -> bool:
        return any(len(line) > limit for line in block.split(b"\n"))

    rng = random.Random(7)
    for _ in range(5000):
        block = bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 50)))
        limit = rng.randint(0, 12)
        assert _has_line_longer_than(block, limit) == by_split(block, limit), (block, limit)
    for limit in (1, 5, 100):
        assert not _has_line_longer_than(b"x" * limit, limit)
        assert _has_line_longer_than(b"x" * (limit + 1), limit)
        assert _has_line_longer_than(b"\n" * 3 + b"x" * (limit + 1) + b"\n", limit)
        assert not _has_line_longer_than((b"x" * limit + b"\n") * 50, limit)
