"""Rooms (`engine/workdirs.py`, `engine/rooms.py`): every run gets a new one, everything
in it is reached through the descriptor of the directory the server made, and secret
arguments are overwritten in the file the server wrote, wherever a job moved or linked it."""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from flwd.engine import workdirs
from flwd.engine.artifacts import MAX_SKIP_NOTES, Collected
from flwd.engine.recovery import clean_work_root
from flwd.engine.rooms import UnsafeEntry, open_dir, open_file
from flwd.engine.workdirs import (
    _BACKLOG,
    _FS_IOC_GETFLAGS,
    _FS_TOPDIR_FL,
    WorkDirs,
    _make_room,
    remove_entries,
    spread_subdirectories,
)
from tests.unit.engine_support import wait_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_each_run_gets_a_new_room_with_private_modes(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        dirs = WorkDirs(tmp_path / "work")
        first = await dirs.open("run_a", {"n": 1}, secret=False)
    finally:
        os.umask(old_umask)
    room = Path(first.path)
    assert room == tmp_path / "work" / "run_a"
    assert json.loads((room / "args.json").read_bytes()) == {"n": 1}
    assert Path(first.args_file) == room / "args.json"
    assert Path(first.run_dir) == room / "run"
    assert Path(first.artifacts_dir) == room / "artifacts"
    assert Path(first.result_file("main")) == room / "results" / "main.json"
    assert _mode(tmp_path / "work") == 0o700
    assert {p.name: _mode(p) for p in room.iterdir()} == {
        "args.json": 0o600,
        "results": 0o700,
        "artifacts": 0o700,
        "run": 0o700,
    }
    # a job could keep descriptors into its room (while one is open, no other file or
    # directory can have the same inode)
    kept = [os.open(p, os.O_RDONLY) for p in [room, *room.rglob("*")]]
    dirs.discard("run_a", first)
    assert not room.exists()

    # left exactly as made, and still not reused: no directory or file of the first run
    # is part of the second's room
    second = await dirs.open("run_b", {"n": 2}, secret=False)
    room_b = Path(second.path)
    assert {os.fstat(fd).st_ino for fd in kept}.isdisjoint(
        {os.stat(p).st_ino for p in [room_b, *room_b.rglob("*")]}
    )
    dirs.discard("run_b", second)
    await dirs.aclose()
    assert list((tmp_path / "work").iterdir()) == []
    assert all(os.fstat(fd).st_nlink == 0 for fd in kept)  # deleted, not kept anywhere
    for fd in kept:
        os.close(fd)


def _inode_flags(path: Path) -> int | None:
    """The inode flags `chattr` sets (None where the file system has none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        return flags[0]
    except OSError:
        return None
    finally:
        os.close(fd)


async def test_rooms_are_spread_over_the_file_systems_block_groups(tmp_path: Path) -> None:
    # `work/` is marked as the top of directory hierarchies (chattr +T) where the file
    # system has inode flags (ext4: this machine's and CI's); elsewhere nothing changes
    probe = tmp_path / "probe"
    probe.mkdir()
    supported = _inode_flags(probe) is not None
    dirs = WorkDirs(tmp_path / "work")
    room = await dirs.open("run_a", {}, secret=False)
    flags = _inode_flags(tmp_path / "work")
    if supported:
        assert flags is not None and flags & _FS_TOPDIR_FL
        # asking again changes nothing and says so
        fd = os.open(tmp_path / "work", os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert spread_subdirectories(fd)
        finally:
            os.close(fd)
        assert _inode_flags(tmp_path / "work") == flags
    else:
        assert flags is None
    assert Path(room.run_dir).is_dir()
    dirs.discard("run_a", room)
    await dirs.aclose()


async def test_rooms_made_ahead_are_used_only_as_made(tmp_path: Path) -> None:
    dirs = WorkDirs(tmp_path / "work", spares=4)
    first = await dirs.open("run_a", {}, secret=False)  # none made yet: made for it
    await wait_for_spares(dirs, tmp_path / "work", 4)
    spares = sorted(p for p in (tmp_path / "work").iterdir() if p.name.startswith(".new-"))
    assert len(spares) == 4
    # a spare someone tampered with (here: a hard link to its arguments file) is not used
    for spare in spares:
        os.link(spare / "args.json", tmp_path / f"link-{spare.name}")
    second = await dirs.open("run_b", {"token": "s3cret"}, secret=True)
    assert not [p for p in tmp_path.glob("link-*") if p.read_bytes()]
    assert json.loads(Path(second.args_file).read_bytes()) == {"token": "s3cret"}
    assert os.stat(second.args_file).st_nlink == 1
    for room, run_id in ((first, "run_a"), (second, "run_b")):
        dirs.discard(run_id, room)
    await dirs.aclose()
    assert list((tmp_path / "work").iterdir()) == []


async def test_housekeeping_yields_the_cpu_and_still_deletes_every_room(tmp_path: Path) -> None:
    # rooms are made ahead on a thread of lowest CPU priority; many more finished rooms
    # than that thread's backlog are deleted all the same
    work = tmp_path / "work"
    dirs = WorkDirs(work, spares=4)
    for n in range(3 * _BACKLOG):
        room = await dirs.open(f"run_{n}", {"n": n}, secret=False)
        dirs.discard(f"run_{n}", room)
    # (refilled once half or fewer are left: the last runs may leave three)
    await wait_for_spares(dirs, work, dirs.spares // 2 + 1)
    nice = {}
    for thread in threading.enumerate():
        if thread.name.startswith("flwd-rooms") and thread.native_id is not None:
            with contextlib.suppress(OSError):
                line = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
                nice[thread.name] = int(line[line.rfind(")") + 2 :].split()[16])
    assert nice and set(nice.values()) == {19}
    await dirs.aclose()
    assert list(work.iterdir()) == []


async def test_an_earlier_servers_rooms_made_ahead_are_deleted_by_the_next(
    tmp_path: Path,
) -> None:
    # the start-up clean-up runs while queued runs take rooms: it leaves rooms made ahead
    # (it cannot tell an earlier server's from those being made for the runs) to WorkDirs
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(_make_room(fd, ".new-earlier"))
    finally:
        os.close(fd)
    (work / "run_gone").mkdir()
    (work / ".old-run_x").mkdir()
    clean_work_root(work, {"run_kept"})
    assert sorted(p.name for p in work.iterdir()) == [".new-earlier"]
    dirs = WorkDirs(work)
    room = await dirs.open("run_a", {}, secret=False)
    dirs.discard("run_a", room)
    await dirs.aclose()
    assert list(work.iterdir()) == []


async def wait_for_spares(dirs: WorkDirs, work: Path, count: int) -> None:
    def made() -> bool:
        # a room is listed from its mkdir on; it is made once its args.json is there
        rooms = [p for p in work.iterdir() if p.name.startswith(".new-")]
        return len(rooms) >= count and all((p / "args.json").exists() for p in rooms)

    await wait_for(made, what=f"{count} rooms made ahead")


async def test_secret_arguments_are_overwritten_wherever_the_file_went(tmp_path: Path) -> None:
    dirs = WorkDirs(tmp_path / "work")
    room = await dirs.open("run_a", {"token": "s3cret"}, secret=True)
    # the job keeps a hard link, then moves the file itself out of the room
    os.link(room.args_file, tmp_path / "kept-link")
    os.rename(room.args_file, tmp_path / "moved")
    dirs.discard("run_a", room)
    for path in (tmp_path / "kept-link", tmp_path / "moved"):
        assert path.read_bytes().strip() == b"", path
    await dirs.aclose()


async def test_the_server_reaches_into_a_room_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "main.json").write_text('{"stolen": true}')
    dirs = WorkDirs(tmp_path / "work")
    room = await dirs.open("run_a", {}, secret=False)
    results = Path(room.path) / "results"

    # a symbolic link in place of the results directory: refused, never read or deleted
    results.rmdir()
    results.symlink_to(outside)
    assert room.result_written("main")
    with pytest.raises(UnsafeEntry, match="'results' is a symbolic link"):
        room.read_result("main", 1024)
    room.remove_result("main")
    assert (outside / "main.json").exists()

    # a result file that is a link, a hard link or a FIFO is refused
    results.unlink()
    results.mkdir()
    (results / "link.json").symlink_to(outside / "main.json")
    os.link(outside / "main.json", results / "hard.json")
    os.mkfifo(results / "fifo.json")
    (results / "big.json").write_bytes(b" " * 11)
    (results / "ok.json").write_bytes(b"[1]")
    for step, message in [
        ("link", "symbolic link"),
        ("hard", "other hard links"),
        ("fifo", "not a regular file"),
        ("big", "larger than the 10 bytes"),
    ]:
        with pytest.raises(UnsafeEntry, match=message):
            room.read_result(step, 10)
    assert room.read_result("ok", 10) == b"[1]"
    assert room.read_result("none", 10) is None
    assert not room.result_written("none")

    # the room itself replaced by a link: the server still works in the directory it made
    moved = tmp_path / "work" / "moved-away"
    os.rename(room.path, moved)
    os.symlink(outside, room.path)
    assert room.read_result("ok", 10) == b"[1]"
    dirs.discard("run_a", room)
    await dirs.aclose()
    # the link was deleted, not followed
    assert sorted(p.name for p in outside.iterdir()) == ["main.json"]
    assert not os.path.lexists(room.path)


def test_open_dir_and_open_file_refuse_what_is_not_what_they_open(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir-link").symlink_to(tmp_path / "dir")
    (tmp_path / "file-link").symlink_to(tmp_path / "file")
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(open_dir(top, "dir"))
        os.close(open_file(top, "file"))
        for name, kind in [("dir-link", "a symbolic link"), ("file", "a regular file")]:
            with pytest.raises(UnsafeEntry, match=f"'{name}' is {kind}, not a directory"):
                open_dir(top, name)
        for name in ("file-link", "dir-link"):
            with pytest.raises(UnsafeEntry, match="symbolic link"):
                open_file(top, name)
        with pytest.raises(FileNotFoundError):
            open_dir(top, "missing")
    finally:
        os.close(top)


def test_skipped_artifacts_are_named_up_to_a_limit() -> None:
    collected = Collected(
        skipped=[f"'f{i}' not collected: it is a symbolic link" for i in range(25)]
    )
    notes = collected.notes()
    assert len(notes) == MAX_SKIP_NOTES + 1
    assert notes[0] == "[flwd: artifact 'f0' not collected: it is a symbolic link]"
    assert notes[-1] == "[flwd: 5 more files under $FLWD_ARTIFACTS_DIR not collected]"


def test_rooms_are_deleted_whole_without_following_links(tmp_path: Path) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    root = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = ["as-made", "written", "linked"]
        for name in names:
            os.close(_make_room(root, name))
        (work / "written" / "run" / "out.txt").write_text("x")  # a run that wrote a file
        (work / "linked" / "run").rmdir()
        (work / "linked" / "run").symlink_to(outside)  # a run that planted a link
        remove_entries(root, names)
    finally:
        os.close(root)
    assert list(work.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "kept"


@pytest.mark.parametrize("rm", ["rm", "no rm", "rm fails"])
async def test_finished_rooms_are_deleted_in_batches_by_rm_or_else_by_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rm: str
) -> None:
    # an `rm` process deletes the rooms of the runs that ended together, whole and
    # without following what a run planted; without one (or when it fails), the thread
    work, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    calls = tmp_path / "rm-calls"
    wrapper = tmp_path / "rm-wrapper"
    real = "/bin/false" if rm == "rm fails" else workdirs._RM
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(workdirs, "_RM", None if rm == "no rm" else str(wrapper))
    dirs = WorkDirs(work, spares=0)
    rooms = [await dirs.open(f"run_{n}", {}, secret=False) for n in range(5)]
    (work / "run_1" / "run" / "out.txt").write_text("x")  # a run that wrote a file
    (work / "run_2" / "run").rmdir()
    (work / "run_2" / "run").symlink_to(outside)  # a run that planted a link
    for n, room in enumerate(rooms):
        dirs.discard(f"run_{n}", room)
    await wait_for(lambda: list(work.iterdir()) == [], what="the rooms to be deleted")
    await dirs.aclose()
    assert (outside / "keep.txt").read_text() == "kept"
    if rm == "no rm":
        assert not calls.exists()
    else:  # one process for the five rooms, given their names under work/
        (line,) = calls.read_text().splitlines()
        assert line.split() == ["-rf", "--one-file-system", "--"] + [
            f".old-run_{n}" for n in range(5)
        ]
