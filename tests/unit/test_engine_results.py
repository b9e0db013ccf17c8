"""Results (`$FLWD_RESULT_FILE`, `result_schema`) and artifacts (`$FLWD_ARTIFACTS_DIR`)."""

from __future__ import annotations

import hashlib
import re

from flwd.states import FailureReason, RunStatus
from tests.unit.engine_support import EngineWorld, events_of, run_job

pytest_plugins = ["tests.unit.conftest_engine"]


async def test_result_file_becomes_the_run_result(engine_world: EngineWorld) -> None:
    engine_world.job(
        "answer",
        {"command": 'echo \'{"answer": 42, "list": [1, "two", null]}\' > "$FLWD_RESULT_FILE"'},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "answer")
        assert run.status is RunStatus.SUCCESS
        assert run.result is not None
        assert run.result.value == {"answer": 42, "list": [1, "two", None]}
        assert run.result.steps == {"main": run.result.value}
        outputs = [e for e in await events_of(service, run.run_id) if e.type == "step.result"]
        assert [e.data for e in outputs] == [{"step_id": "main", "value": run.result.value}]


async def test_no_result_file_means_no_result(engine_world: EngineWorld) -> None:
    engine_world.job("quiet", {"command": "true"})
    async with engine_world.open() as service:
        run = await run_job(service, "quiet")
        assert run.status is RunStatus.SUCCESS and run.result is None


async def test_multi_step_result_is_the_last_declared_step_that_wrote_one(
    engine_world: EngineWorld,
) -> None:
    write = 'echo "$VALUE" > "$FLWD_RESULT_FILE"'
    engine_world.job(
        "multi",
        {
            "steps": [
                # `first` finishes last in time, but `third` is declared last
                {"id": "first", "run": "sleep 0.3; " + write, "env": {"VALUE": '{"a": 1}'}},
                {"id": "second", "needs": "first", "run": "true"},
                {"id": "third", "run": write, "env": {"VALUE": "[1, 2]"}},
            ]
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "multi")
        assert run.status is RunStatus.SUCCESS
        assert run.result is not None
        assert run.result.value == [1, 2]
        assert run.result.steps == {"first": {"a": 1}, "third": [1, 2]}


SCHEMA = {
    "type": "object",
    "required": ["count"],
    "properties": {"count": {"type": "integer"}},
}


async def test_result_schema_is_enforced(engine_world: EngineWorld) -> None:
    engine_world.job(
        "counted",
        {
            "args": {"type": "object", "properties": {"value": {"type": "string"}}},
            "result_schema": SCHEMA,
            "command": 'echo "$FLWD_ARG_VALUE" > "$FLWD_RESULT_FILE"',
        },
    )
    async with engine_world.open() as service:
        good = await run_job(service, "counted", {"value": '{"count": 3}'})
        assert good.status is RunStatus.SUCCESS
        assert good.result is not None and good.result.value == {"count": 3}

        bad = await run_job(service, "counted", {"value": '{"count": "three"}'})
        assert bad.status is RunStatus.FAILED
        assert bad.reason is FailureReason.ERROR
        assert bad.error is not None
        assert "result does not match result_schema" in bad.error
        assert "/count" in bad.error and "integer" in bad.error
        # the offending value is still there to look at
        assert bad.result is not None and bad.result.value == {"count": "three"}


ARTIFACT_MAKER = """\
import os, pathlib
root = pathlib.Path(os.environ["FLWD_ARTIFACTS_DIR"])
(root / "reports" / "2024").mkdir(parents=True)
(root / "reports" / "2024" / "summary.txt").write_text("all good\\n")
(root / "data.bin").write_bytes(bytes(range(256)) * 10)
(root / "page.html").write_text("<h1>hi</h1>")
os.symlink("/etc/hostname", root / "link-to-server-file")
os.symlink("/etc", root / "link-to-server-dir")
"""


async def test_artifacts_are_stored_by_sha256(engine_world: EngineWorld) -> None:
    engine_world.job(
        "makes-files", {"steps": [{"id": "main", "script": "make.py"}]}, {"make.py": ARTIFACT_MAKER}
    )
    expected = {
        "reports/2024/summary.txt": (b"all good\n", "text/plain"),
        "data.bin": (bytes(range(256)) * 10, "application/octet-stream"),
        "page.html": (b"<h1>hi</h1>", "text/html"),
    }
    async with engine_world.open() as service:
        run = await run_job(service, "makes-files")
        assert run.status is RunStatus.SUCCESS, run.error
        artifacts, total = await service.list_artifacts(run_id=run.run_id)
        assert total == 3
        by_path = {a.path: a for a in artifacts}
        # symbolic links are never followed: no server file can be published through one
        assert set(by_path) == set(expected)
        for path, (content, media_type) in expected.items():
            artifact = by_path[path]
            assert re.match(r"^artifact_[0-9A-HJKMNP-TV-Z]{26}$", artifact.id)
            assert artifact.run_id == run.run_id
            assert artifact.name == path.rsplit("/", 1)[-1]
            assert artifact.media_type == media_type
            assert artifact.size_bytes == len(content)
            assert artifact.sha256 == hashlib.sha256(content).hexdigest()
            assert run.started_at <= artifact.created_at <= run.finished_at  # type: ignore[operator]
            meta, blob = await service.get_artifact(artifact.id)
            assert meta == artifact
            assert (
                blob == engine_world.data_dir / "artifacts" / artifact.sha256[:2] / artifact.sha256
            )
            assert blob.read_bytes() == content
        blobs = {p.name for p in (engine_world.data_dir / "artifacts").rglob("*") if p.is_file()}
        assert blobs == {a.sha256 for a in artifacts}

        # the same bytes from another run are stored once, listed twice
        again = await run_job(service, "makes-files")
        more, _ = await service.list_artifacts(run_id=again.run_id)
        assert {a.sha256 for a in more} == {a.sha256 for a in artifacts}
        assert {a.id for a in more}.isdisjoint({a.id for a in artifacts})
        blobs = {p.name for p in (engine_world.data_dir / "artifacts").rglob("*") if p.is_file()}
        assert len(blobs) == 3
        _, everything = await service.list_artifacts()
        assert everything == 6


async def test_a_failed_run_keeps_its_artifacts(engine_world: EngineWorld) -> None:
    engine_world.job(
        "fails-with-log",
        {"command": 'echo "debug info" > "$FLWD_ARTIFACTS_DIR/debug.log"; exit 1'},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "fails-with-log")
        assert run.status is RunStatus.FAILED
        (artifact,), _ = await service.list_artifacts(run_id=run.run_id)
        assert artifact.name == "debug.log" and artifact.size_bytes == len(b"debug info\n")


async def test_a_result_file_that_is_not_a_regular_file_fails_the_run(
    engine_world: EngineWorld,
) -> None:
    outside = engine_world.root / "server-config.json"
    outside.write_text('{"db_password": "from-the-server"}')
    engine_world.job("result-link", {"command": f'ln -s {outside} "$FLWD_RESULT_FILE"'})
    engine_world.job("result-fifo", {"command": 'mkfifo "$FLWD_RESULT_FILE"'})
    async with engine_world.open() as service:
        linked = await run_job(service, "result-link")
        # like artifacts, a result is never read through a symbolic link
        assert linked.status is RunStatus.FAILED and linked.reason is FailureReason.ERROR
        assert linked.result is None
        assert "from-the-server" not in str(await events_of(service, linked.run_id))
        # a FIFO nobody writes to must not hang the run (and its slot) forever
        fifo = await run_job(service, "result-fifo", timeout=5)
        assert fifo.status is RunStatus.FAILED and fifo.reason is FailureReason.ERROR
        assert service.scheduler.running() == []


async def test_an_artifacts_dir_replaced_by_a_symlink_is_not_followed(
    engine_world: EngineWorld,
) -> None:
    outside = engine_world.root / "server-files"
    outside.mkdir()
    (outside / "private.key").write_text("not for publishing")
    engine_world.job(
        "swap-dir",
        {"command": f'rmdir "$FLWD_ARTIFACTS_DIR" && ln -s {outside} "$FLWD_ARTIFACTS_DIR"'},
    )
    async with engine_world.open() as service:
        run = await run_job(service, "swap-dir")
        assert run.status is RunStatus.SUCCESS
        assert await service.list_artifacts(run_id=run.run_id) == ([], 0)
    assert (outside / "private.key").exists()  # and cleaning up did not follow it either
