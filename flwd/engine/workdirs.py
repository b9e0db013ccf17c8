"""Work directories of runs: `<data dir>/work/<run_id>/` with `.flwd/args.json`,
`.flwd/results/` and `.flwd/artifacts/`.

Creating directories and files is the slowest thing a no-op run does on some disks
(ext4 on a virtual disk: 0.2-0.6 ms per `mkdir` or new file, more than spawning the
process; truncating a file is slow too), so directories are recycled: a finished run's
work dir that the job left as it found it (only the files flwd made, no links, same
modes) becomes a spare, and the next run renames a spare into place and writes its
arguments over the previous ones (padded with spaces, which JSON allows, rather than
truncated). Spares are made ahead and anything else a run left behind is deleted in a
worker thread; the rest is a handful of metadata operations, cheaper inline than a hop to
a thread and back. A run with secret arguments has them blanked out before it is reported
over; other arguments are stored in the database anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import msgspec

_ARGS_MODE = 0o600
_SUBDIRS = ("results", "artifacts")


class WorkDirs:
    def __init__(self, root: Path, *, spares: int) -> None:
        self.root = root
        self.spares = spares
        self._pool: list[str] = []
        self._trash: list[str] = []
        self._names = itertools.count()
        self._filler: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: the mode a directory gets here (from the umask), learnt from the first one made
        self._dir_mode: int | None = None
        self._closing = False

    def open(self, workdir: str, args: dict[str, Any]) -> None:
        """Make the run's work dir (`<root>/<run_id>`), with its arguments written to
        `.flwd/args.json`."""
        while self._pool:
            spare = self._pool.pop()
            try:
                os.rename(spare, workdir)
                break
            except OSError:
                self._throw_away(spare)
        else:
            _make(workdir)
            if self._dir_mode is None:
                self._dir_mode = stat.S_IMODE(os.lstat(workdir).st_mode)
        self._refill()
        # the only place unmasked secret arguments touch the disk: private, and blanked
        # out when the run ends
        _write_args(f"{workdir}/.flwd/args.json", msgspec.json.encode(args))

    def discard(self, workdir: str, *, secret: bool) -> None:
        """Take a finished run's work dir out of the way: a spare if the job left it as it
        was made, else deleted in the background. With `secret` arguments, they are
        blanked out first."""
        if secret and not _blank(f"{workdir}/.flwd/args.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{workdir}/.flwd/args.json")
        aside = f"{self.root}/.spare-{next(self._names)}"
        try:
            os.rename(workdir, aside)
        except FileNotFoundError:
            return
        except OSError:
            self._throw_away(workdir)
            return
        keep = (
            not self._closing
            and self._dir_mode is not None
            and len(self._pool) < 2 * self.spares
            and _as_made(aside, self._dir_mode)
        )
        if keep:
            self._pool.append(aside)
        else:
            self._throw_away(aside)

    async def aclose(self) -> None:
        """Delete the spares and wait for background work: afterwards `work/` holds only
        the directories of runs still active."""
        self._closing = True
        while self._filler is not None and not self._filler.done():
            await asyncio.wait({self._filler})
        spares, self._pool = self._pool, []
        for spare in spares:
            self._throw_away(spare)
        while self._sweeper is not None and not self._sweeper.done():
            await asyncio.wait({self._sweeper})

    def _throw_away(self, path: str) -> None:
        self._trash.append(path)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="flwd-workdir-sweeper")

    async def _sweep(self) -> None:
        while self._trash:
            paths, self._trash = self._trash, []
            await asyncio.to_thread(_remove_trees, paths)

    def _refill(self) -> None:
        if self._closing or len(self._pool) >= self.spares // 2:
            return
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill(), name="flwd-workdir-spares")

    async def _fill(self) -> None:
        while not self._closing and len(self._pool) < self.spares:
            wanted = [
                f"{self.root}/.spare-{next(self._names)}"
                for _ in range(self.spares - len(self._pool))
            ]
            made = await asyncio.to_thread(_make_all, wanted)
            if not made:
                return
            if self._dir_mode is None:
                self._dir_mode = stat.S_IMODE(os.lstat(made[0]).st_mode)
            self._pool.extend(made)


def _make(workdir: str) -> None:
    os.makedirs(f"{workdir}/.flwd", exist_ok=True)
    for sub in _SUBDIRS:
        with contextlib.suppress(FileExistsError):
            os.mkdir(f"{workdir}/.flwd/{sub}")
    os.close(os.open(f"{workdir}/.flwd/args.json", os.O_WRONLY | os.O_CREAT, _ARGS_MODE))


def _make_all(paths: list[str]) -> list[str]:
    made = []
    for path in paths:
        try:
            _make(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            break
        made.append(path)
    return made


def _as_made(workdir: str, dir_mode: int) -> bool:
    """True if the work dir holds exactly what `_make` made (result files aside, which
    are removed): no other file, no link, every mode as made."""
    flwd = f"{workdir}/.flwd"
    try:
        if os.listdir(workdir) != [".flwd"] or sorted(os.listdir(flwd)) != [
            "args.json",
            "artifacts",
            "results",
        ]:
            return False
        directory = stat.S_IFDIR | dir_mode  # type and permission bits, compared at once
        if (
            os.lstat(workdir).st_mode != directory
            or os.lstat(flwd).st_mode != directory
            or os.lstat(f"{flwd}/args.json").st_mode != stat.S_IFREG | _ARGS_MODE
            or os.lstat(f"{flwd}/artifacts").st_mode != directory
            or os.lstat(f"{flwd}/results").st_mode != directory
        ):
            return False
        if os.listdir(f"{flwd}/artifacts"):
            return False
        for name in os.listdir(f"{flwd}/results"):
            if not stat.S_ISREG(os.lstat(f"{flwd}/results/{name}").st_mode):
                return False
            os.unlink(f"{flwd}/results/{name}")
    except OSError:
        return False
    return True


def _write_args(path: str, data: bytes) -> None:
    """Write `data` over the file from its start, padded with spaces to the old length
    (JSON allows trailing whitespace): no truncation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, _ARGS_MODE)
    try:
        size = os.fstat(fd).st_size
        if size > len(data):
            data += b" " * (size - len(data))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _blank(path: str) -> bool:
    """Overwrite the arguments file with spaces, if it is still the regular file flwd
    wrote."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "wb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        handle.write(b" " * info.st_size)
    return True


def _remove_trees(paths: list[str]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
