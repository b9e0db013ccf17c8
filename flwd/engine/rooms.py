"""One run's room, reached only through descriptors the server made: `Room`, and
`open_dir` / `open_file`, which open one component at a time with `O_NOFOLLOW`.

A step can change anything in its room (it runs as the server's user today): put a
symbolic link where `results/` was, rename the room, hard-link a file from elsewhere into
`artifacts/`. So the server never resolves a path through a room: it keeps the
descriptor of the directory it made and opens what is inside relative to it. A planted
link is refused, never followed; a file to publish must be a regular file with a single
link. See `workdirs.py` for how rooms are made and deleted, docs/storage.md for the layout.
"""

from __future__ import annotations

import errno
import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO nobody writes to must not wait for a writer
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeEntry(Exception):
    """Something in a room the server will not open: a symbolic link, or an entry of
    another kind than expected. The message says what, for the run's log."""


def _kind(dir_fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "something else"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def open_dir(dir_fd: int, name: str) -> int:
    """A descriptor of the directory `name` in `dir_fd`, never through a link.
    FileNotFoundError if there is none; UnsafeEntry if `name` is anything else."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafeEntry(f"'{name}' is {_kind(dir_fd, name)}, not a directory") from None
        raise


def open_file(dir_fd: int, name: str) -> int:
    """A read descriptor of the regular file `name` in `dir_fd` that has no other hard
    link. FileNotFoundError if there is none; UnsafeEntry for a symbolic link, a file of
    another kind, or one linked elsewhere (its content may not be the step's to publish)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeEntry("it is a symbolic link; write a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeEntry("it is not a regular file")
        if info.st_nlink != 1:
            raise UnsafeEntry("it has other hard links; copy the file instead of linking it")
    except BaseException:
        os.close(fd)
        raise
    return fd


class Room:
    """One run's room, reached through the descriptor of the directory the server made.
    The paths are for the step's environment only; the server uses `fd`."""

    def __init__(self, path: str, fd: int, args: tuple[int, int] | None) -> None:
        self.path = path
        self.fd = fd
        #: the descriptor of `args.json` and how many bytes were written to it, kept
        #: until the run ends only when the arguments hold secrets
        self._args = args
        self.run_dir = f"{path}/run"
        self.args_file = f"{path}/args.json"
        self.artifacts_dir = f"{path}/artifacts"

    def result_file(self, step_id: str) -> str:
        return f"{self.path}/results/{step_id}.json"

    def result_written(self, step_id: str) -> bool:
        """False when the step left nothing at its result file's name (the common case,
        answered without reading); True otherwise, also when `read_result` will refuse."""
        try:
            results = open_dir(self.fd, "results")
        except FileNotFoundError:
            return False
        except (UnsafeEntry, OSError):
            return True
        try:
            os.stat(f"{step_id}.json", dir_fd=results, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except (UnsafeEntry, OSError):
            return True
        finally:
            os.close(results)
        return True

    def read_result(self, step_id: str, limit: int) -> bytes | None:
        """The bytes of the step's result file, None if it wrote none; UnsafeEntry (with
        a message for the run) if it is not a regular file of at most `limit` bytes
        reached without following a link."""
        try:
            results = open_dir(self.fd, "results")
        except FileNotFoundError:
            return None
        except UnsafeEntry as exc:
            raise UnsafeEntry(f"result file cannot be read: {exc}") from None
        try:
            fd = open_file(results, f"{step_id}.json")
        except FileNotFoundError:
            return None
        except UnsafeEntry as exc:
            raise UnsafeEntry(f"result file refused: {exc}") from None
        except OSError as exc:
            raise UnsafeEntry(f"result file cannot be read: {exc.strerror}") from None
        finally:
            os.close(results)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UnsafeEntry(f"result file is larger than the {limit} bytes allowed")
        return data

    def remove_result(self, step_id: str) -> None:
        """Delete the step's result file (before a retry), whatever it is, by name."""
        try:
            results = open_dir(self.fd, "results")
        except (UnsafeEntry, OSError):
            return
        try:
            os.unlink(f"{step_id}.json", dir_fd=results)
        except OSError:
            pass
        finally:
            os.close(results)

    def has_artifacts(self) -> bool:
        """False when `artifacts/` is an empty directory or gone (the common case,
        answered inline); True when there is something to collect or to report."""
        try:
            fd = open_dir(self.fd, "artifacts")
        except FileNotFoundError:
            return False
        except (UnsafeEntry, OSError):
            return True
        try:
            with os.scandir(fd) as entries:
                return next(entries, None) is not None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Overwrite secret arguments (in the file the server wrote, wherever it is now)
        and let go of the room's descriptors."""
        try:
            if self._args is not None:
                (fd, size), self._args = self._args, None
                try:
                    write_all(fd, b" " * size, offset=0)
                finally:
                    os.close(fd)
        finally:
            os.close(self.fd)


def write_all(fd: int, data: bytes, *, offset: int | None = None) -> None:
    """Write all of `data` at the file position, or at `offset` (the file's own inode,
    wherever it was moved or linked: a hard link to it then shows what was written)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        if offset is not None:
            offset += written
