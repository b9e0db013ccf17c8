"""The output pipeline: lines with levels, over-long lines cut with a marker, a per-run cap
that keeps the head and the tail with a marker of what was dropped."""

from __future__ import annotations

import random
import re

from flwd.engine.output import _has_line_longer_than
from flwd.states import RunStatus
from tests.unit.engine_support import EngineWorld, events_of, output_lines, run_job

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


async def test_the_run_cap_keeps_head_and_tail_with_a_marker(engine_world: EngineWorld) -> None:
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
        lines = output_lines(await events_of(service, run.run_id))
        (marker_at,) = [i for i, m in enumerate(lines) if m.startswith("[flwd:")]
        kept_head, marker, kept_tail = lines[:marker_at], lines[marker_at], lines[marker_at + 1 :]
        line_bytes = len("line 000001\n")

        # the head: the run's first lines, in order, filling (almost all) its budget
        assert kept_head == [f"line {i:06d}" for i in range(1, len(kept_head) + 1)]
        assert head - line_bytes < len(kept_head) * line_bytes <= head
        # the tail: the run's last lines, in order, filling (almost all) its budget
        first_tail = total_lines - len(kept_tail) + 1
        assert kept_tail == [f"line {i:06d}" for i in range(first_tail, total_lines + 1)]
        assert tail - line_bytes < len(kept_tail) * line_bytes <= tail
        # the marker says exactly what was dropped
        dropped = total_lines - len(kept_head) - len(kept_tail)
        found = re.search(r"(\d+) lines \((\d+) bytes\)", marker)
        assert found is not None, marker
        assert int(found.group(1)) == dropped
        assert int(found.group(2)) == dropped * line_bytes

        logs = await service.read_logs(run.run_id)
        assert [x.message for x in logs] == lines
        assert logs[marker_at].level == "warning"


async def test_output_under_the_cap_is_kept_whole(engine_world: EngineWorld) -> None:
    engine_world.job("some", {"command": "seq 1 500"})
    async with engine_world.open(output_head_bytes=1000, output_tail_bytes=10_000) as service:
        run = await run_job(service, "some")
        lines = [x.message for x in await service.read_logs(run.run_id)]
        assert lines == [str(i) for i in range(1, 501)]


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
