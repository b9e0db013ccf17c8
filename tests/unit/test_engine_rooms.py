"""A job that plants links in its room, or keeps a hard link or a descriptor into it,
against the real engine: nothing outside the data dir is published or written, no later
run's arguments can be read through what it kept, and every file holding state or secrets
is private to the server's user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flwd.engine.service import RunService
from flwd.states import FailureReason, RunStatus
from tests.unit.engine_support import EngineWorld, events_of, finish, run_job, wait_for

pytest_plugins = ["tests.unit.conftest_engine"]

SECRET_ARGS = {
    "type": "object",
    "properties": {"token": {"type": "string", "format": "secret"}},
    "required": ["token"],
}

#: waits (bounded) until the test creates the file named in $GO
WAIT_FOR_GO = 'i=0; while [ ! -e "$GO" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done'


def _outside(world: EngineWorld) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    """A directory outside the data dir with files a job would like to see published
    or overwritten, and a snapshot (content, mtime) to compare with afterwards."""
    outside = world.root / "outside"
    outside.mkdir()
    (outside / "private.key").write_text("not for publishing")
    (outside / "main.json").write_text('{"stolen": "from outside"}')
    (outside / "args.json").write_text("the original")
    return outside, _snapshot(outside)


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), os.lstat(p).st_mtime_ns) for p in sorted(directory.iterdir())}


async def _notes(service: RunService, run_id: str) -> list[str]:
    """The lines flwd itself wrote into the run's log."""
    return [x.message for x in await service.read_logs(run_id) if x.message.startswith("[flwd:")]


async def test_links_planted_in_the_room_are_never_followed(engine_world: EngineWorld) -> None:
    outside, before = _outside(engine_world)
    plant = (
        'room=$(dirname "$FLWD_RUN_DIR"); '
        'rm -rf "$room/results" "$room/artifacts" "$room/args.json"; '
        f'ln -s {outside} "$room/results"; ln -s {outside} "$room/artifacts"; '
        f'ln -s {outside}/args.json "$room/args.json"'
    )
    engine_world.job(
        "plant",
        {
            "args": SECRET_ARGS,
            "retries": 1,
            # the first attempt plants the links and fails, so the retry's clean-up of
            # the result file meets them too
            "command": f'if [ "$FLWD_ATTEMPT" = 0 ]; then {plant}; exit 1; fi; echo again',
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "plant", {"token": "tok-planted-1"})
        # the run ends, with a clear reason, and publishes nothing
        assert run.status is RunStatus.FAILED and run.reason is FailureReason.ERROR
        assert "'results' is a symbolic link, not a directory" in (run.error or "")
        assert run.result is None
        assert await service.list_artifacts(run_id=run.run_id) == ([], 0)
        notes = await _notes(service, run.run_id)
        assert any("'artifacts' is a symbolic link" in note for note in notes), notes
        assert "from outside" not in str(await events_of(service, run.run_id))
    # nothing outside was written, deleted or blanked (the secret arguments were
    # overwritten in the file the server made, not in the one the link names)
    assert _snapshot(outside) == before


async def test_a_room_replaced_by_a_link_is_not_followed(engine_world: EngineWorld) -> None:
    outside, before = _outside(engine_world)
    engine_world.job(
        "swap-room",
        {
            "args": SECRET_ARGS,
            "command": 'echo "made here" > "$FLWD_ARTIFACTS_DIR/mine.txt"; '
            'echo \'{"ok": 1}\' > "$FLWD_RESULT_FILE"; '
            'room=$(dirname "$FLWD_RUN_DIR"); cd /; '
            f'mv "$room" "$room.moved" && ln -s {outside} "$room"',
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "swap-room", {"token": "tok-swapped-2"})
        # the server kept working in the directory it made, wherever it went: the job's
        # own result and artifact, nothing of the directory the link names
        assert run.status is RunStatus.SUCCESS, run.error
        assert run.result is not None and run.result.value == {"ok": 1}
        artifacts, _ = await service.list_artifacts(run_id=run.run_id)
        assert [a.path for a in artifacts] == ["mine.txt"]
        moved = engine_world.data_dir / "work" / f"{run.run_id}.moved"
        assert (moved / "args.json").read_bytes().strip() == b""  # secrets overwritten
    assert _snapshot(outside) == before
    # the link was removed, not followed
    assert not os.path.lexists(engine_world.data_dir / "work" / run.run_id)


async def test_artifacts_that_are_links_or_special_files_are_skipped_and_said_so(
    engine_world: EngineWorld,
) -> None:
    outside, before = _outside(engine_world)
    engine_world.job(
        "sneaky-artifacts",
        {
            "command": 'cd "$FLWD_ARTIFACTS_DIR"; echo fine > real.txt; '
            "mkdir -p sub/deeper && echo nested > sub/deeper/inner.txt; "
            f"ln -s {outside}/private.key link.txt; ln -s /etc/hostname hostname; "
            f"ln -s {outside} sub/dir-link; "
            f"ln {outside}/private.key hard.key; "
            "mkfifo pipe",
        },
    )
    async with engine_world.open() as service:
        run = await run_job(service, "sneaky-artifacts")
        assert run.status is RunStatus.SUCCESS, run.error
        artifacts, _ = await service.list_artifacts(run_id=run.run_id)
        assert sorted(a.path for a in artifacts) == ["real.txt", "sub/deeper/inner.txt"]
        notes = "\n".join(await _notes(service, run.run_id))
        for expected in [
            "'link.txt' not collected: it is a symbolic link",
            "'hostname' not collected: it is a symbolic link",
            "'sub/dir-link' not collected: it is a symbolic link",
            "'hard.key' not collected: it has other hard links",
            "'pipe' not collected: it is not a regular file",
        ]:
            assert expected in notes, notes
    blobs = [
        p.read_bytes() for p in (engine_world.data_dir / "artifacts").rglob("*") if p.is_file()
    ]
    assert sorted(blobs) == [b"fine\n", b"nested\n"]
    assert _snapshot(outside) == before


async def test_what_a_job_keeps_of_its_room_shows_no_later_run_s_arguments(
    engine_world: EngineWorld,
) -> None:
    spy_dir = engine_world.root / "spy"
    spy_dir.mkdir()
    go, go2 = engine_world.root / "go", engine_world.root / "go2"
    engine_world.job(
        "spy",
        {
            "args": SECRET_ARGS,
            # a hard link to its arguments file (same file system as the data dir), and
            # the room's path, for the test to hold descriptors into it like a job would
            "command": f'ln "$FLWD_ARGS_FILE" {spy_dir}/args-link; '
            f'dirname "$FLWD_ARGS_FILE" > {spy_dir}/room; {WAIT_FOR_GO}',
            "env": {"GO": str(go)},
        },
    )
    engine_world.job(
        "victim",
        {
            "args": SECRET_ARGS,
            "command": f'echo "$FLWD_ARG_TOKEN" > run-file; {WAIT_FOR_GO}',
            "env": {"GO": str(go2)},
        },
    )
    async with engine_world.open() as service:
        spy = await service.create_run("spy", {"token": "spy-own-token"})
        room_file = spy_dir / "room"
        await wait_for(lambda: room_file.exists() and room_file.read_text().strip(), what="room")
        room = Path(room_file.read_text().strip())
        held = [os.open(room, os.O_RDONLY | os.O_DIRECTORY)]
        held.append(os.open(room / "run", os.O_RDONLY | os.O_DIRECTORY))
        try:
            go.touch()
            assert (await finish(service, spy)).status is RunStatus.SUCCESS
            # the spy's own secret is overwritten in the file it linked
            assert (spy_dir / "args-link").read_bytes().strip() == b""

            victim = await service.create_run("victim", {"token": "victim-token-2"})
            victim_room = engine_world.data_dir / "work" / victim.run_id
            await wait_for(lambda: (victim_room / "run" / "run-file").exists(), what="victim")
            # while the victim runs, nothing the spy kept shows its arguments
            assert b"victim-token-2" not in (spy_dir / "args-link").read_bytes()
            for fd in held:
                assert b"victim-token-2" not in b"".join(_read_all(fd)), "through a kept fd"
                assert os.fstat(fd).st_ino not in {
                    os.stat(victim_room).st_ino,
                    os.stat(victim_room / "run").st_ino,
                }
            assert b"victim-token-2" in (victim_room / "args.json").read_bytes()
            go2.touch()
            assert (await finish(service, victim)).status is RunStatus.SUCCESS
        finally:
            for fd in held:
                os.close(fd)


def _read_all(dir_fd: int) -> list[bytes]:
    """The bytes of every file reachable from the directory `dir_fd`."""
    found = []
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                found += _read_all(sub)
            finally:
                os.close(sub)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as handle:
                found.append(handle.read())
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_data_dir_database_and_rooms_are_private(engine_world: EngineWorld) -> None:
    data = engine_world.data_dir
    # made by an older flwd, or by hand, with the usual modes: narrowed at start-up
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    go = engine_world.root / "go"
    engine_world.job(
        "waits",
        {
            "command": f'echo x > "$FLWD_ARTIFACTS_DIR/out.txt"; {WAIT_FOR_GO}',
            "env": {"GO": str(go)},
        },
    )
    old_umask = os.umask(0o022)
    try:
        async with engine_world.open() as service:
            run = await service.create_run("waits", {})
            room = data / "work" / run.run_id
            await wait_for(lambda: (room / "artifacts" / "out.txt").exists(), what="the step")
            assert _mode(data) == 0o700
            for name in ("flwd.db", "flwd.db-wal", "flwd.db-shm", "engine.lock"):
                assert _mode(data / name) == 0o600, name
            assert _mode(data / "work") == 0o700
            assert _mode(room) == 0o700
            assert _mode(room / "args.json") == 0o600
            for sub in ("results", "artifacts", "run"):
                assert _mode(room / sub) == 0o700, sub
            go.touch()
            assert (await finish(service, run)).status is RunStatus.SUCCESS
            (artifact,), _ = await service.list_artifacts(run_id=run.run_id)
            blob = data / "artifacts" / artifact.sha256[:2] / artifact.sha256
            assert _mode(data / "artifacts") == _mode(blob.parent) == 0o700
            assert _mode(blob) == 0o600
    finally:
        os.umask(old_umask)

    # a database made readable by others is narrowed again at the next start
    for name in ("flwd.db", "engine.lock"):
        os.chmod(data / name, 0o644)
    async with engine_world.open():
        assert _mode(data / "flwd.db") == _mode(data / "engine.lock") == 0o600
        assert _mode(data / "flwd.db-wal") == 0o600
