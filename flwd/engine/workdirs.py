"""Work directories: each run's room under `<data dir>/work/`, made new for the run and
deleted when it ends (what is inside a room, and how the server reaches it without
following links, is in `rooms.py`).

    work/<run_id>/        the room (0700), made by the server
    ├── args.json         $FLWD_ARGS_FILE (0600)
    ├── results/          $FLWD_RESULT_FILE is results/<step id>.json
    ├── artifacts/        $FLWD_ARTIFACTS_DIR
    └── run/              $FLWD_RUN_DIR, the working directory of every step

Nothing a step has seen is ever used again: a recycled directory or file is exactly what a
job can keep a hard link or a descriptor into, and read the next run's arguments through.
Every run gets a new room and a new `args.json`. The server keeps a descriptor of `work/`
and deletes only by name under it, without following links.

The layout is ready for a user per run (docs/storage.md): a room the server keeps, only
searchable by the step's user, with `run/`, `results/` and `artifacts/` given to that
user, is one whose entries the step cannot replace at all.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from flwd.engine.rooms import DIR_FLAGS, DIR_MODE, FILE_MODE, Room, write_all

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: what the server makes in a room besides `args.json`
_SUBDIRS = ("results", "artifacts", "run")
#: the name of a room made ahead starts with this
SPARE_PREFIX = ".new-"
#: finished rooms waiting to be deleted beyond which they are deleted at normal priority
_BACKLOG = 64
#: how long finished rooms wait to be deleted together, and at most how many at once
_SWEEP_DELAY = 0.2
_SWEEP_BATCH = 500


class WorkDirs:
    """Makes each run's room under `root` and deletes it when the run ends.

    Making and deleting directories is the slowest thing a no-op run does on some disks
    (ext4 on a virtual disk: 0.2-0.6 ms per `mkdir`, and more than 10 ms when other
    processes keep the file system busy), so both are done off the event loop: up to
    `spares` empty rooms are made ahead under random names on a worker thread, and a run
    takes one by renaming it to its own name. Such a room is new: no step has seen it.
    Finished rooms are deleted in the background, a batch every `_SWEEP_DELAY` seconds by
    an `rm` process of their own (see `_sweep`).
    """

    def __init__(self, root: Path, *, spares: int = 0) -> None:
        self.root = str(root)
        self.spares = spares
        self._root_fd: int | None = None
        #: rooms made ahead: name under `work/` -> descriptor of the directory made
        self._pool: list[tuple[str, int]] = []
        self._filler: asyncio.Task[None] | None = None
        self._trash: list[str] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        #: the thread that makes rooms ahead and deletes finished ones, at the lowest
        #: CPU priority (see `_background_thread`); made on first use
        self._background: ThreadPoolExecutor | None = None

    async def open(self, run_id: str, args: dict[str, Any], *, secret: bool) -> Room:
        """The run's room, with its arguments written to `args.json`. With `secret`
        arguments the file's descriptor is kept, to overwrite them when the run ends."""
        root = self._open_root()
        data = msgspec.json.encode(args)
        while self._pool:
            name, fd = self._pool.pop()
            self._refill()
            room = self._take(name, fd, run_id, data, secret)
            if room is not None:
                return room
        self._refill()
        # none made ahead (or none usable): one made now, off the loop; tried again if
        # it was deleted meanwhile (the start-up clean-up of `work/` may run beside us)
        for _ in range(3):
            name = _fresh_name()
            fd = await asyncio.to_thread(_make_room, root, name)
            room = self._take(name, fd, run_id, data, secret)
            if room is not None:
                return room
        raise OSError(f"the work directory of run {run_id} could not be set up")

    def _take(self, name: str, fd: int, run_id: str, data: bytes, secret: bool) -> Room | None:
        """Give the room made as `name` (directory `fd`) to the run: renamed to its id,
        its arguments written. None if it is not exactly as made (then thrown away)."""
        assert self._root_fd is not None
        root = self._root_fd
        args_fd: int | None = None
        try:
            try:
                os.rename(name, run_id, src_dir_fd=root, dst_dir_fd=root)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                # left by a previous life of the engine, for a run queued again since
                self._throw_away(self._set_aside(run_id, f".old-{run_id}.{time.time_ns()}"))
                os.rename(name, run_id, src_dir_fd=root, dst_dir_fd=root)
            name = run_id
            # the name is ours, as is the only link of an empty `args.json`
            made = os.fstat(fd)
            named = os.stat(run_id, dir_fd=root, follow_symlinks=False)
            args_fd = os.open("args.json", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            info = os.fstat(args_fd)
            if (named.st_dev, named.st_ino) != (made.st_dev, made.st_ino) or (
                info.st_nlink,
                info.st_size,
                stat.S_IFMT(info.st_mode),
            ) != (1, 0, stat.S_IFREG):
                raise OSError(f"room {name} was changed before its run")
            write_all(args_fd, data)
        except OSError:
            log.warning("a work directory was not as made: made another", exc_info=True)
            if args_fd is not None:
                os.close(args_fd)
            os.close(fd)
            # renamed already: free the run's name at once, or the deletion in the
            # background would later remove the room the run is given next
            aside = self._set_aside(name, f".old-{run_id}.{time.time_ns()}")
            self._throw_away(aside)
            return None
        if not secret:
            os.close(args_fd)
            return Room(f"{self.root}/{run_id}", fd, None)
        return Room(f"{self.root}/{run_id}", fd, (args_fd, len(data)))

    def discard(
        self, run_id: str, room: Room | None, *, now: bool = False
    ) -> asyncio.Future[None] | None:
        """End a run's room: its secret arguments overwritten, its name under `work/`
        freed at once (renamed aside), and whatever is there deleted in the background;
        with `now`, by a deletion of its own, returned to be awaited."""
        if room is not None:
            room.close()
        if self._root_fd is None:
            return None
        aside = self._set_aside(run_id, f".old-{run_id}")
        if aside is None:
            return None
        if now:
            return asyncio.ensure_future(asyncio.to_thread(remove_entries, self._root_fd, [aside]))
        self._throw_away(aside)
        return None

    def _set_aside(self, name: str, aside: str) -> str | None:
        """Rename `name` under `work/` (whatever it is now) to `aside`, and return the
        name it now has (`name` if it could not be renamed; None if it is gone)."""
        assert self._root_fd is not None
        try:
            os.rename(name, aside, src_dir_fd=self._root_fd, dst_dir_fd=self._root_fd)
        except FileNotFoundError:
            return None
        except OSError:
            return name
        return aside

    async def aclose(self) -> None:
        """Delete the rooms made ahead and wait for the rooms being deleted: afterwards
        `work/` holds only the rooms of runs still active."""
        self._closing = True
        while self._filler is not None and not self._filler.done():
            await asyncio.wait({self._filler})
        spares, self._pool = self._pool, []
        for name, fd in spares:
            os.close(fd)
            self._throw_away(name)
        while self._sweeper is not None and not self._sweeper.done():
            await asyncio.wait({self._sweeper})
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        if self._background is not None:
            self._background.shutdown(wait=False)
            self._background = None

    def _open_root(self) -> int:
        if self._root_fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, DIR_MODE)
            self._root_fd = os.open(self.root, DIR_FLAGS)
            spread_subdirectories(self._root_fd)
            # rooms an earlier server made ahead (the start-up clean-up leaves them here:
            # it cannot tell them from ours); none of ours exists yet
            for name in os.listdir(self._root_fd):
                if name.startswith(SPARE_PREFIX):
                    self._throw_away(name)
        return self._root_fd

    def _refill(self) -> None:
        if self._closing or len(self._pool) > self.spares // 2:
            return
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill(), name="flwd-workdir-spares")

    async def _fill(self) -> None:
        root = self._open_root()
        while not self._closing and len(self._pool) < self.spares:
            wanted = _fresh_names(self.spares - len(self._pool))
            made = await self._in_background(_make_rooms, root, wanted)
            self._pool.extend(made)
            if len(made) < len(wanted):
                return

    def _throw_away(self, name: str | None) -> None:
        if name is None:
            return
        self._trash.append(name)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="flwd-workdir-sweeper")

    async def _sweep(self) -> None:
        """Delete the finished rooms. A batch at a time goes to an `rm -rf` process, which
        never follows a link (nor crosses into another file system) and is given `work/`
        by the server's own descriptor as its working directory: deleting on a thread of
        the server cost each no-op run 0.6 ms of latency and 1 ms of the server's CPU at
        one run at a time (the thread's many short system calls take the GIL back each
        time, in turn with the event loop; docs/decisions.md, "Finished rooms are deleted
        by an `rm` process"). Without `rm`, or when it fails, the thread does it."""
        assert self._root_fd is not None
        while self._trash:
            if not self._closing:
                await asyncio.sleep(_SWEEP_DELAY)  # the rooms of the runs ending meanwhile
            names, self._trash = self._trash[:_SWEEP_BATCH], self._trash[_SWEEP_BATCH:]
            if await self._removed_by_rm(names):
                continue
            if len(names) > _BACKLOG:
                # the background thread is falling behind (the machine is busy with
                # runs for long): this batch at normal priority, so the backlog is bounded
                await asyncio.to_thread(remove_entries, self._root_fd, names)
            else:
                await self._in_background(remove_entries, self._root_fd, names)

    async def _removed_by_rm(self, names: list[str]) -> bool:
        """Delete `names` (entries of `work/`) with an `rm` process; False if it could not
        run (then nothing is known to be deleted)."""
        assert self._root_fd is not None
        if _RM is None:
            return False
        try:
            process = await asyncio.create_subprocess_exec(
                _RM,
                "-rf",
                "--one-file-system",
                "--",
                *names,
                cwd=f"/proc/self/fd/{self._root_fd}",
                pass_fds=(self._root_fd,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, errors = await process.communicate()
        except OSError as exc:
            log.warning("finished work directories are deleted by a thread: %s", exc)
            return False
        if process.returncode != 0:
            log.warning(
                "rm left some of %d finished work directories (%s): deleted by a thread",
                len(names),
                errors.decode(errors="replace").strip()[:500],
            )
            return False
        return True

    def _in_background(self, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._background is None:
            self._background = ThreadPoolExecutor(
                1, thread_name_prefix="flwd-rooms", initializer=_background_thread
            )
        return asyncio.get_running_loop().run_in_executor(self._background, func, *args)


#: <linux/fs.h>: the ioctls that read and set an inode's flags, and the flag that marks
#: the top of directory hierarchies
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(dir_fd: int) -> bool:
    """Mark `dir_fd` as the top of directory hierarchies (`chattr +T`), so that ext2/3/4
    places each directory made in it in a block group of its own choosing, as it does
    for directories made in `/`, instead of beside `dir_fd`. True if the mark is set.

    Each room is such a hierarchy, made and deleted a moment later. Without a journal,
    ext4 will not reuse an inode freed in the last few seconds (or minutes, while its
    inode table block is not yet written back) and walks past each one to find a free
    inode; with every room in `work/`'s group, each new inode cost 0.4-0.9 ms of kernel
    time after a few thousand runs. Spread over the groups, 0.03 ms (docs/decisions.md,
    "Rooms spread over the file system's block groups"). Other file systems refuse the
    ioctl or ignore the flag: nothing changes there."""
    flags = array.array("i", [0])
    try:
        fcntl.ioctl(dir_fd, _FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & _FS_TOPDIR_FL:
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(dir_fd, _FS_IOC_SETFLAGS, flags)
    except OSError:
        return False
    return True


#: GNU or busybox `rm`, which deletes without following links (None: not installed)
_RM = shutil.which("rm", path="/usr/bin:/bin")


def _background_thread() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread's nice value is its own).
    Making and deleting rooms is housekeeping that no run waits for; on a busy machine it
    yields the CPU to the runs. A run that finds no room made ahead makes one at normal
    priority, so it never waits behind this thread."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


#: the secret key of this process's room names (see `_fresh_name`)
_NAME_KEY = secrets.token_bytes(32)
_name_numbers = itertools.count()


def _fresh_name() -> str:
    """A name no one can guess (with a user per run, a step may search `work/` but must
    not guess a name): a counter keyed-hashed with a random key of this process (BLAKE2b
    as a pseudorandom function: a microsecond, where asking the kernel for random bytes
    cost the loop 0.1 ms per name on this machine)."""
    number = next(_name_numbers).to_bytes(8, "little")
    digest = hashlib.blake2b(number, key=_NAME_KEY, digest_size=8).hexdigest()
    return f"{SPARE_PREFIX}{digest}"


def _fresh_names(count: int) -> list[str]:
    return [_fresh_name() for _ in range(count)]


def _make_room(root: int, name: str) -> int:
    """Make an empty room `name` in `root`; the descriptor of its directory."""
    os.mkdir(name, DIR_MODE, dir_fd=root)
    fd = os.open(name, DIR_FLAGS, dir_fd=root)
    try:
        for sub in _SUBDIRS:
            os.mkdir(sub, DIR_MODE, dir_fd=fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open("args.json", flags, FILE_MODE, dir_fd=fd))
    except BaseException:
        os.close(fd)
        remove_entries(root, [name])
        raise
    return fd


def _make_rooms(root: int, names: list[str]) -> list[tuple[str, int]]:
    made = []
    for name in names:
        try:
            made.append((name, _make_room(root, name)))
        except OSError:
            log.warning("could not make a work directory ahead", exc_info=True)
            break
    return made


def remove_entries(dir_fd: int, names: list[str]) -> None:
    """Delete each of `names` in `dir_fd`: a directory with all it holds, anything else
    by itself; never following a link, never failing."""
    for name in names:
        try:
            is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            if is_dir and not _remove_room_as_made(dir_fd, name):
                shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except OSError:
            continue


def _remove_room_as_made(dir_fd: int, name: str) -> bool:
    """Delete `name` if it holds just what `_make_room` put there, with nothing inside
    (what a run that wrote no file leaves): five calls instead of `shutil.rmtree`'s walk,
    which cost the no-op runs more than anything else the rooms do. False, with whatever
    was removed so far gone, when anything else is there."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.unlink("args.json", dir_fd=fd)
        for sub in _SUBDIRS:
            os.rmdir(sub, dir_fd=fd)
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
