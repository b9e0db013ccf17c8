"""Work directories of runs: `<data dir>/work/<run_id>/` with `.flwd/args.json`,
`.flwd/results/` and `.flwd/artifacts/`.

Creating directories and files is the slowest thing a no-op run does on some disks
(ext4 on a virtual disk: ≈ 0.2-0.6 ms per `mkdir` or new file, more than spawning the
process), so directories are recycled: a run's work dir that the job left as it found it
(only the files flwd made, no links, same modes) becomes a spare, and the next run renames
a spare into place and rewrites its `args.json`. All of it happens in worker threads:
spares are made ahead, a finished run's dir is checked and recycled or deleted in the
background. A run with
secret arguments has its arguments file emptied before it is reported over.
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
        self._pool: list[Path] = []
        self._trash: list[Path] = []
        self._names = itertools.count()
        self._filler: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: the mode a directory gets here (from the umask), learnt from the first one made
        self._dir_mode: int | None = None
        self._closing = False
        self._sweeping = 0  # directories the sweeper is looking at

    async def open(self, run_id: str, args: dict[str, Any], *, alone: bool = False) -> Path:
        """The run's work dir, with its arguments written to `.flwd/args.json`.

        These are slow disk operations here (0.2-0.5 ms), done in a worker thread so that
        the event loop serves other runs meanwhile; `alone` (no other run is active) does
        them inline, which is quicker than the hop to a thread and back."""
        workdir = self.root / run_id
        spare = self._pool.pop() if self._pool else None
        self._refill()
        data = msgspec.json.encode(args)
        if alone:
            made = _open(workdir, spare, data)
        else:
            made = await asyncio.to_thread(_open, workdir, spare, data)
        if made is not None and self._dir_mode is None:
            self._dir_mode = made
        return workdir

    def discard(self, workdir: Path, *, secret: bool) -> None:
        """Rename the directory out of the way now; in the background, empty its arguments
        file and keep it as a spare if the job left it as it was made, or delete it.

        With `secret` arguments the file is emptied now, before the run is reported over
        (emptying a file is a slow disk operation here; arguments without secrets are in
        the database anyway)."""
        if secret:
            _wipe_args(workdir)
        aside = self.root / f".spare-{next(self._names)}"
        try:
            os.rename(workdir, aside)
        except FileNotFoundError:
            return
        except OSError:
            aside = workdir
        self._throw_away(aside)

    async def aclose(self) -> None:
        """Delete the spares and wait for background work: afterwards `work/` holds only
        the directories of runs still active."""
        self._closing = True
        while True:
            for task in (self._filler, self._sweeper):
                if task is not None and not task.done():
                    await asyncio.wait({task})
            if not self._pool and not self._trash:
                return
            # a sweep that began before closing may have added spares
            spares, self._pool = self._pool, []
            self._trash.extend(spares)
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep(), name="flwd-workdir-sweeper")

    def _throw_away(self, path: Path) -> None:
        self._trash.append(path)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="flwd-workdir-sweeper")

    async def _sweep(self) -> None:
        while self._trash:
            paths, self._trash = self._trash, []
            keep = self._dir_mode is not None and not self._closing
            room = 2 * self.spares - len(self._pool) if keep else 0
            self._sweeping = len(paths)
            try:
                recycled = await asyncio.to_thread(_recycle_or_remove, paths, room, self._dir_mode)
            finally:
                self._sweeping = 0
            self._pool.extend(recycled)

    def _refill(self) -> None:
        # directories on their way back from finished runs count: most come back
        coming = len(self._pool) + len(self._trash) + self._sweeping
        if self._closing or coming >= self.spares // 2:
            return
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill(), name="flwd-workdir-spares")

    async def _fill(self) -> None:
        while not self._closing:
            missing = self.spares - len(self._pool) - len(self._trash) - self._sweeping
            if missing <= 0:
                return
            wanted = [self.root / f".spare-{next(self._names)}" for _ in range(missing)]
            made = await asyncio.to_thread(_make_all, wanted)
            if not made:
                return
            if self._dir_mode is None:
                self._dir_mode = stat.S_IMODE(os.lstat(made[0]).st_mode)
            self._pool.extend(made)


def _open(workdir: Path, spare: Path | None, args: bytes) -> int | None:
    """Rename `spare` to `workdir` (or make it) and write the arguments; the mode of a
    directory made here, None when a spare was used."""
    made: int | None = None
    try:
        if spare is None:
            raise FileNotFoundError
        os.rename(spare, workdir)
    except OSError:
        if spare is not None:
            shutil.rmtree(spare, ignore_errors=True)
        _make(workdir)
        made = stat.S_IMODE(os.lstat(workdir).st_mode)
    # the only place unmasked secret arguments touch the disk: private, and emptied
    # when the run ends (a spare's is empty already: no O_TRUNC, which is slow here)
    fd = os.open(
        workdir / ".flwd" / "args.json", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, _ARGS_MODE
    )
    with os.fdopen(fd, "wb") as handle:
        handle.write(args)
    return made


def _make(workdir: Path) -> None:
    os.makedirs(workdir / ".flwd", exist_ok=True)
    for sub in _SUBDIRS:
        with contextlib.suppress(FileExistsError):
            os.mkdir(workdir / ".flwd" / sub)
    os.close(os.open(workdir / ".flwd" / "args.json", os.O_WRONLY | os.O_CREAT, _ARGS_MODE))


def _make_all(paths: list[Path]) -> list[Path]:
    made = []
    for path in paths:
        try:
            _make(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            break
        made.append(path)
    return made


def _wipe_args(workdir: Path) -> None:
    if not _empty_args(workdir / ".flwd" / "args.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(workdir / ".flwd" / "args.json")


def _empty_args(path: Path) -> bool:
    """Truncate the arguments file if it is still the regular file flwd wrote."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _as_made(workdir: Path, dir_mode: int) -> bool:
    """True if the work dir holds exactly what `_make` made (result files aside, which
    are removed): no other file, no link, every mode as made."""
    flwd = workdir / ".flwd"
    try:
        if os.listdir(workdir) != [".flwd"] or sorted(os.listdir(flwd)) != [
            "args.json",
            "artifacts",
            "results",
        ]:
            return False
        if not _is(workdir, stat.S_IFDIR, dir_mode) or not _is(flwd, stat.S_IFDIR, dir_mode):
            return False
        if not _is(flwd / "args.json", stat.S_IFREG, _ARGS_MODE):
            return False
        for sub in _SUBDIRS:
            if not _is(flwd / sub, stat.S_IFDIR, dir_mode):
                return False
        if os.listdir(flwd / "artifacts"):
            return False
        for name in os.listdir(flwd / "results"):
            if not _is(flwd / "results" / name, stat.S_IFREG, None):
                return False
            os.unlink(flwd / "results" / name)
    except OSError:
        return False
    return True


def _is(path: Path, kind: int, mode: int | None) -> bool:
    info = os.lstat(path)
    if stat.S_IFMT(info.st_mode) != kind:
        return False
    return mode is None or stat.S_IMODE(info.st_mode) == mode


def _recycle_or_remove(paths: list[Path], room: int, dir_mode: int | None) -> list[Path]:
    """The spares among `paths` (left as made, up to `room` of them); the others are
    deleted."""
    recycled: list[Path] = []
    for path in paths:
        _wipe_args(path)
        spare = path.name.startswith(".spare-") and dir_mode is not None
        if spare and len(recycled) < room and _as_made(path, dir_mode or 0):
            recycled.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
    return recycled
