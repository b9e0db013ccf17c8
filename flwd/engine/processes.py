"""Finding, signalling and reaping the processes of a run.

A step runs as the leader of its own session and process group, so one `killpg` reaches
everything it spawned. Processes that left the group (a `setsid` daemon, a double fork)
are found in one of two ways:

- **while the engine runs**, the engine's process is a *child subreaper*
  (`PR_SET_CHILD_SUBREAPER`): a process whose parent exits is re-parented to the engine
  instead of to init. Once a step's group is empty, every live process it left behind
  is therefore a child of the engine, or a descendant of one, and carries the run's
  `FLWD_RUN_ID`; listing the engine's own children (`/proc/self/task/*/children`) finds
  them without looking at any other process on the machine;
- **after a crash** (and wherever the subreaper is unavailable), by scanning every
  process's environment for `FLWD_RUN_ID=<run id>`.

"Gone" means no process that is not a zombie: zombies hold no resources. Zombies the engine
adopted are reaped by it when it looks for escaped processes at the end of each run; to
tell them from the children asyncio waits for, the engine installs its own pidfd-based
child watcher, which knows every pid it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVarTuple, Unpack

log = logging.getLogger(__name__)
_PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36
#: pids of this process's children that something in it waits for (the executor's steps,
#: asyncio's subprocesses under the pidfd watcher): never reaped as adopted zombies
WAITED_FOR: set[int] = set()
_Ts = TypeVarTuple("_Ts")


def _stat_fields(pid: str) -> tuple[str, int] | None:
    """(state, pgrp) of a process from /proc, or None if it vanished."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for entry in os.listdir(_PROC):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and fields[1] == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def _has_env(pid: int | str, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return needle in handle.read()
    except OSError:
        return False


def _needle(run_id: str) -> bytes:
    return f"FLWD_RUN_ID={run_id}\0".encode()


def run_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries `FLWD_RUN_ID=<run_id>` (a full scan)."""
    needle = _needle(run_id)
    found = []
    me = os.getpid()
    for entry in os.listdir(_PROC):
        if not entry.isdigit() or int(entry) == me:
            continue
        if _has_env(entry, needle):
            fields = _stat_fields(entry)
            if fields is not None and fields[0] != "Z":
                found.append(int(entry))
    return found


# -- adopting orphans ---------------------------------------------------------------------


_children_file: tuple[int, int] | None = None  # (pid, fd) of the main thread's children


def adopted_candidates() -> list[int]:
    """Children of this process's main thread: where the kernel re-parents the orphans a
    subreaper adopts (the first live thread of its group, the main one).

    Read at the end of every run, so the file stays open and is read again from its start
    (procfs makes it anew on each read), a tenth of the cost of opening it each time."""
    global _children_file
    pid = os.getpid()
    try:
        if _children_file is None or _children_file[0] != pid:
            _children_file = (pid, os.open(f"/proc/self/task/{pid}/children", os.O_RDONLY))
        fd = _children_file[1]
        size = 4096
        while len(raw := os.pread(fd, size, 0)) >= size:
            size *= 4
    except OSError:
        return children()
    return [int(x) for x in raw.split()]


def unwaited_children() -> bool:
    """Whether this process has a child that nothing in it waits for: an adopted
    process, alive or a zombie (one read of /proc, for the common case of none)."""
    return any(pid not in WAITED_FOR for pid in adopted_candidates())


def children(pid: int | str = "self") -> list[int]:
    """Direct children of a process (of all its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found.extend(int(x) for x in handle.read().split())
        except OSError:
            continue
    return found


class PidfdChildWatcher(asyncio.AbstractChildWatcher):
    """asyncio's child watcher, on pidfds: no thread per child (Python 3.11's default
    starts one), and it works with whichever loop spawns the child (3.11's own
    `PidfdChildWatcher` is tied to one loop). Every child it waits for is in
    `WAITED_FOR`."""

    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, Unpack[_Ts]], object], *args: *_Ts
    ) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        WAITED_FOR.add(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    def _reap(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            log.warning("child process %d was reaped elsewhere: reporting exit status 255", pid)
            returncode = 255
        finally:
            os.close(pidfd)
            WAITED_FOR.discard(pid)
        callback(pid, returncode, *args)

    def remove_child_handler(self, pid: int) -> bool:
        return False  # asyncio never removes a handler of a live child on Unix

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Nothing to attach: each child is watched on the loop running when it starts."""

    def close(self) -> None:
        """Nothing to release: a child's pidfd is closed as soon as it has exited."""

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> PidfdChildWatcher:
        return self

    def __exit__(
        self,
        a: type[BaseException] | None,
        b: BaseException | None,
        c: TracebackType | None,
    ) -> None:
        """Nothing to undo: the watcher is process-wide (see `adopt_orphans`)."""


_watcher: PidfdChildWatcher | None = None
_adopting = False


def adopt_orphans() -> bool:
    """Make this process a child subreaper with the pidfd child watcher (once).

    True when escaped processes can be found among this process's children; False where
    that is not possible (not Linux, an old kernel, Python >= 3.12 where asyncio's child
    watchers are deprecated), and the engine falls back to scanning every process.
    """
    global _watcher, _adopting
    if _watcher is not None:
        return _adopting and asyncio.get_child_watcher() is _watcher
    if not sys.platform.startswith("linux") or sys.version_info >= (3, 12):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
        if not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
            return False
    except (OSError, AttributeError):
        return False
    _watcher = PidfdChildWatcher()
    asyncio.set_child_watcher(_watcher)
    _adopting = True
    return True


class EscapedProcesses:
    """Finds the live processes of `run_id` that escaped their step's group, among this
    (subreaper) process's children and their descendants; use it as `terminate`'s `find`
    once the run's groups are empty, when every such process is in that tree.

    A child is one of the run's if it carries the run's id or was found before (its
    environment may have been wiped since); its descendants are, whatever theirs says.
    Zombie children met on the way that asyncio does not wait for are reaped.
    """

    def __init__(self, run_id: str, exclude: Iterable[int] = ()) -> None:
        self.needle = _needle(run_id)
        self.exclude = set(exclude)
        self.seen: set[int] = set()

    def __call__(self) -> list[int]:
        stack = []
        direct = set()
        for pid in adopted_candidates():
            if pid in WAITED_FOR or pid in self.exclude:
                continue
            fields = _stat_fields(str(pid))
            if fields is None:
                continue
            if fields[0] == "Z":
                _reap_adopted(pid)
            elif pid in self.seen or _has_env(pid, self.needle):
                stack.append(pid)
                direct.add(pid)
        found: set[int] = set()
        while stack and len(found) < 100_000:
            pid = stack.pop()
            fields = _stat_fields(str(pid))
            if pid in found or fields is None:
                continue
            if fields[0] == "Z":
                if pid in direct:  # died since it was listed (a signal just sent)
                    _reap_adopted(pid)
                continue
            found.add(pid)
            stack.extend(children(pid))
        self.seen |= found
        return sorted(found)


def reap_adopted() -> None:
    """Reap the zombie children of this process that nothing in it waits for: adopted
    processes that have ended (once a run's escaped processes are stopped, those whose
    own parent was stopped with them are re-parented here as zombies)."""
    for pid in adopted_candidates():
        if pid not in WAITED_FOR:
            fields = _stat_fields(str(pid))
            if fields is not None and fields[0] == "Z":
                _reap_adopted(pid)


def _reap_adopted(pid: int) -> None:
    # only with the engine's watcher, which knows every pid asyncio waits for
    if asyncio.get_child_watcher() is _watcher:
        _reap(pid)


def _reap(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    return False


# -- signalling ---------------------------------------------------------------------------


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def _wait_until(probe: Callable[[], list[int]], deadline: float) -> bool:
    delay = 0.005
    while True:
        if not probe():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


class _Probe:
    def __init__(
        self, pgid: int | None, run_id: str | None, find: Callable[[], list[int]] | None
    ) -> None:
        self.pgid = pgid
        self.run_id = run_id
        self.find = find

    def __call__(self) -> list[int]:
        pids = group_members(self.pgid) if self.pgid is not None else []
        if self.find is not None:
            pids = sorted(set(pids) | set(self.find()))
        elif self.run_id is not None:
            pids = sorted(set(pids) | set(run_processes(self.run_id)))
        return pids


async def terminate(
    pgid: int | None,
    *,
    run_id: str | None = None,
    grace: float,
    find: Callable[[], list[int]] | None = None,
) -> bool:
    """SIGTERM the group and the stray processes of the run (those `find` returns, or by
    default those carrying `run_id`), wait up to `grace` seconds, then SIGKILL whatever is
    left and wait until nothing is. True if everything is gone."""
    probe = _Probe(pgid, run_id, find)
    pids = probe()
    if not pids:
        return True
    if pgid is not None:
        _signal_group(pgid, signal.SIGTERM)
    _signal_pids(pids, signal.SIGTERM)
    if await _wait_until(probe, time.monotonic() + grace):
        return True
    for _ in range(3):  # a fork between probe and kill can add a process: repeat
        left = probe()
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)
        _signal_pids(left, signal.SIGKILL)
        if await _wait_until(probe, time.monotonic() + 2.0):
            return True
    survivors = probe()
    log.error("processes %s of run %s survived SIGKILL", survivors, run_id)
    return not survivors
