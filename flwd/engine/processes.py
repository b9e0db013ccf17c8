"""Finding, signalling and reaping the processes of a run.

A step runs as the leader of its own session and process group, so one `killpg` reaches
everything it spawned. Processes that left the group (a `setsid` daemon, a double fork)
are held by the run's cgroup where the server can make one (`containment.py`); besides,
and instead where it cannot, they are found in one of two ways:

- **while the engine runs**, the engine's process is a *child subreaper*
  (`PR_SET_CHILD_SUBREAPER`, through libc's `prctl`, on every Python version): a process
  whose parent exits is re-parented to the engine instead of to init. Once a step's group
  is empty, every live process it left behind is therefore a child of the engine, or a
  descendant of one; listing the engine's own children (`/proc/self/task/*/children`)
  finds them without looking at any other process on the machine. Such a child is of a
  run if it carries that run's `FLWD_RUN_ID`; one that wiped its environment is of one of
  the runs active when it was first found, and is stopped once none of those but the one
  ending is still active (see `EscapedProcesses`);
- **after a crash** (and wherever the subreaper is unavailable), by scanning every
  process's environment for `FLWD_RUN_ID=<run id>`.

"Gone" means no process that is not a zombie: zombies hold no resources. Zombies the engine
adopted are reaped by it when it looks for escaped processes at the end of each run. No
asyncio child watcher is involved (they are deprecated in Python 3.12 and gone in 3.14):
the engine reaps a zombie child only if it is not one it waits for itself (`WAITED_FOR`)
and it is not in the server's own session. Every adopted process descends from a step,
which starts a session of its own, so it is never in the server's; a child that other
code in the server starts (asyncio's subprocesses, without `start_new_session`) always
is, and its exit status is left to that code.
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
from collections.abc import Callable, Collection
from pathlib import Path

log = logging.getLogger(__name__)
_PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36
#: pids of this process's children that the engine waits for itself (the executor's
#: steps): never reaped as adopted zombies
WAITED_FOR: set[int] = set()


def read_proc(path: str) -> bytes:
    """The whole of a small /proc file: three calls (`open`, one `read`, `close`) where a
    Python file object makes nine, on paths read for every step."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 4096)]
        while len(chunks[-1]) == 4096:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks)


def _stat_fields(pid: str) -> tuple[str, int, int, int] | None:
    """(state, pgrp, session, start time) of a process from /proc, or None if it vanished."""
    try:
        raw = read_proc(f"/proc/{pid}/stat")
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[2]), int(rest[3]), int(rest[19])


def still_running(pids: list[int]) -> list[int]:
    """Those of `pids` that exist and are not zombies (a process leaves its cgroup's
    `cgroup.procs` a moment before it is a zombie)."""
    return [pid for pid in pids if (f := _stat_fields(str(pid))) is not None and f[0] != "Z"]


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


def adopted_children(known: Collection[int] = ()) -> list[int]:
    """This process's children that the engine did not start itself: adopted processes,
    alive or zombies (those in the server's own session were started by other code in
    it), leaving out `known` ones. One read of /proc for the common case of none."""
    found = []
    for pid in adopted_candidates():
        if pid not in WAITED_FOR and pid not in known:
            fields = _stat_fields(str(pid))
            if fields is not None and fields[2] != _own_session():
                found.append(pid)
    return found


_session: tuple[int, int] | None = None  # (pid, session id) of this process


def _own_session() -> int:
    global _session
    if _session is None or _session[0] != os.getpid():
        _session = (os.getpid(), os.getsid(0))
    return _session[1]


def children(pid: int | str = "self") -> list[int]:
    """Direct children of a process (of all its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found.extend(int(x) for x in read_proc(f"/proc/{pid}/task/{tid}/children").split())
        except OSError:
            continue
    return found


_adopting: bool | None = None


def adopt_orphans() -> bool:
    """Make this process a child subreaper (once; libc's `prctl` through ctypes).

    True when escaped processes can be found among this process's children; False where
    that is not possible (not Linux, an old kernel), and the engine falls back to
    scanning every process.
    """
    global _adopting
    if _adopting is None:
        _adopting = _become_subreaper()
    return _adopting


def _become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


class EscapedProcesses:
    """Finds the live processes of `run_id` that escaped their step's group, among this
    (subreaper) process's children and their descendants; use it as `terminate`'s `find`
    once the run's groups are empty, when every such process is in that tree.

    A child is one of the run's if it carries the run's id, or no `FLWD_RUN_ID` of a run
    in `active` (the runs this engine executes, `run_id` included) and none of the active
    runs it was first found with but `run_id` is still active (its environment may have
    been wiped: then it is of one of the runs active when it left its group), or it was
    found before. Its descendants are, whatever theirs says. Zombie children met on the
    way are reaped.
    """

    #: (pid, start time) of adopted processes of an unknown run -> the runs active when
    #: each was first found, one of which it is of
    suspects: dict[tuple[int, int], frozenset[str]] = {}

    def __init__(self, run_id: str, active: Collection[str] = ()) -> None:
        self.run_id = run_id
        self.active = active
        self.needle = _needle(run_id)
        self.seen: set[int] = set()

    def _owner(self, pid: int, started: int) -> str | None:
        """The run an adopted child is of, as far as can be told (None: unknown yet)."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            return None
        if self.needle in environ:
            return self.run_id
        at = environ.find(b"FLWD_RUN_ID=")
        if at >= 0 and (at == 0 or environ[at - 1] == 0):
            owner = environ[at + 12 : environ.find(b"\0", at)].decode(errors="replace")
            if owner in self.active:
                return owner
            return self.run_id  # of a run already over: a leftover, stopped now
        key = (pid, started)
        candidates = self.suspects.setdefault(key, frozenset(self.active) | {self.run_id})
        if not (candidates & set(self.active)) - {self.run_id}:
            del self.suspects[key]
            return self.run_id
        return None

    def __call__(self) -> list[int]:
        stack = []
        direct = set()
        for pid in adopted_children():
            fields = _stat_fields(str(pid))
            if fields is None:
                continue
            if fields[0] == "Z":
                _reap(pid)
            elif pid in self.seen or self._owner(pid, fields[3]) == self.run_id:
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
                    _reap(pid)
                continue
            found.add(pid)
            stack.extend(children(pid))
        self.seen |= found
        live = {(pid, f[3]) for pid in adopted_children() if (f := _stat_fields(str(pid)))}
        for key in [k for k in self.suspects if k not in live]:
            del self.suspects[key]  # gone, or its pid reused
        return sorted(found)


def reap_adopted() -> None:
    """Reap the zombie children of this process that nothing in it waits for: adopted
    processes that have ended (once a run's escaped processes are stopped, those whose
    own parent was stopped with them are re-parented here as zombies)."""
    for pid in adopted_children():
        fields = _stat_fields(str(pid))
        if fields is not None and fields[0] == "Z":
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


async def wait_until(probe: Callable[[], list[int]], deadline: float) -> bool:
    """Poll `probe` (quickly at first, then every 0.1 s) until it lists nothing (True) or
    the monotonic `deadline` has passed (False)."""
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
    if await wait_until(probe, time.monotonic() + grace):
        return True
    for _ in range(3):  # a fork between probe and kill can add a process: repeat
        left = probe()
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)
        _signal_pids(left, signal.SIGKILL)
        if await wait_until(probe, time.monotonic() + 2.0):
            return True
    survivors = probe()
    log.error("processes %s of run %s survived SIGKILL", survivors, run_id)
    return not survivors
