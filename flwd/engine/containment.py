"""Keeping every process of a run in one place: a cgroup v2 per run, where the server may
make one, else the child subreaper alone (see `processes.py`).

**cgroup mode.** The engine finds its own cgroup v2 (`/proc/self/cgroup`, the `cgroup2`
mount in `/proc/self/mountinfo`) and, below it, makes one directory per data dir,
`flwd-<digest of the data dir>-<server pid>`, holding one cgroup per active run,
`run-<run id>`. Each
step is moved into its run's cgroup right after it is spawned, with the children it may
already have started (see `RunCgroup.place`); everything it starts afterwards is born in
the cgroup, whatever it does to its session, process group or environment. At the end of
the run (success, failure, cancel, timeout, shutdown) the cgroup's processes get SIGTERM,
the grace period, then `cgroup.kill`, and the cgroup is removed once it is empty. At
start-up the engine owns the data dir's lock, so every directory of its data dir left by
an earlier server is a crashed engine's: its `run-*` cgroups are killed the same way and
it is removed. Empty directories of servers that no longer exist (another data dir's,
crashed) are removed too.

No controller is enabled anywhere (the cgroups only group, they limit nothing), so the
cgroup v2 rule of "no processes in an inner cgroup with controllers" never applies: the
server stays where it is.

**subreaper mode**, when no cgroup can be made (no cgroup v2, not writable, no
`cgroup.kill`) or `FLWD_CONTAINMENT=subreaper`: see `processes.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Collection
from pathlib import Path

from flwd.engine.processes import (
    adopted_children,
    children,
    read_proc,
    still_running,
    wait_until,
)
from flwd.errors import FlwdError
from flwd.models import ContainmentInfo

log = logging.getLogger(__name__)

CGROUP = "cgroup"
SUBREAPER = "subreaper"

CGROUP_GUARANTEE = (
    "Each run's processes are in a cgroup v2 of their own; at the run's end, on cancel and "
    "on timeout they get SIGTERM, then after the grace period cgroup.kill, and the run ends "
    "only once the cgroup is empty, whatever they did to their session, process group or "
    "environment. A step is moved into the cgroup right after it starts, with the children "
    "it has by then; a process it forks and orphans within those first microseconds is "
    "caught by the subreaper instead. Runs left by a crashed server are killed at start-up."
)
SUBREAPER_GUARANTEE = (
    "The server is a child subreaper: a process that leaves its step's process group "
    "and whose parent exits is re-parented to the server, and is stopped at the end of "
    "its run (found by its FLWD_RUN_ID, or, when it wiped its environment, once no other "
    "run that was active when it was found is still running). A process that escapes "
    "while its parent lives on outside the run's groups, or that outlives a server "
    "crash after wiping its environment, is not found."
)

#: how long the processes of a killed cgroup may take to be gone before it is logged
_KILL_WAIT = 5.0


class ContainmentUnavailable(FlwdError):
    """The cgroup mode was asked for and this machine or server cannot provide it."""


def _own_cgroup_dir() -> Path:
    """The directory of this process's cgroup v2, or ContainmentUnavailable."""
    try:
        own = next(
            line[3:].strip()
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except (OSError, StopIteration):
        raise ContainmentUnavailable("this process is in no cgroup v2 hierarchy") from None
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields = before.split()
        if after.split()[:1] != ["cgroup2"] or len(fields) < 5:
            continue
        root, mount_point = fields[3], fields[4]
        # the mount shows the hierarchy from `root` down: our cgroup must be below it
        if own == root or own.startswith(root.rstrip("/") + "/"):
            relative = own[len(root.rstrip("/")) :].lstrip("/")
            return Path(mount_point.replace("\\040", " ")) / relative
    raise ContainmentUnavailable("no cgroup v2 mount shows this process's cgroup")


class RunCgroup:
    """The cgroup of one run: made when its first step is placed, removed at its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs: int | None = None
        self._lock = threading.Lock()

    def place(self, pid: int) -> None:
        """Move a just-spawned step, and the children it already has, into the cgroup.

        Called on the thread that spawned it (the write waits for the kernel ~0.1-0.2 ms,
        mostly asleep). Anything the step forks after the move is born in the cgroup; a
        child forked before it is found among the step's children and moved too, then its
        own, until a pass finds none new."""
        with self._lock:
            if self._procs is None:
                # (the parent too: a server in another pid namespace may have taken
                # this one's empty directory for a dead server's)
                os.makedirs(self.path, exist_ok=True)
                self._procs = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            procs = self._procs
        self._move(procs, pid)
        moved = {pid}
        pending = [pid]
        while pending and len(moved) < 10_000:
            for child in children(pending.pop()):
                if child not in moved:
                    moved.add(child)
                    self._move(procs, child)
                    pending.append(child)
            if not pending:
                # a child forked and orphaned before the move was re-parented to the
                # engine (the subreaper) and is still in the engine's cgroup: it is
                # taken in too (the sweep above sees any orphaned later)
                for orphan in window_orphans(moved):
                    moved.add(orphan)
                    self._move(procs, orphan)
                    pending.append(orphan)

    @staticmethod
    def _move(procs: int, pid: int) -> None:
        try:
            os.write(procs, str(pid).encode())
        except ProcessLookupError:
            pass  # it has exited already: nothing to hold
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def pids(self) -> list[int]:
        """The processes in the cgroup (zombies are not listed)."""
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_bytes().split()]
        except FileNotFoundError:
            return []

    def populated(self) -> bool:
        try:
            events = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        return "populated 1" in events

    async def terminate(self, grace: float) -> bool:
        """SIGTERM every process in the cgroup, wait up to `grace` seconds for them to be
        gone, then `cgroup.kill`, and wait until the cgroup is empty. True if it is."""
        pids = self.pids()
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if await wait_until(self.pids, time.monotonic() + grace):
            return await wait_until(lambda: still_running(pids), time.monotonic() + _KILL_WAIT)
        pids = sorted(set(pids) | set(self.pids()))
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError as exc:  # a kernel without cgroup.kill: SIGKILL one by one
            log.warning("cgroup.kill of %s failed (%s): killing its processes", self.path, exc)
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if await wait_until(self.pids, time.monotonic() + _KILL_WAIT):
            # out of the cgroup, each is still finishing its exit for a moment
            return await wait_until(lambda: still_running(pids), time.monotonic() + _KILL_WAIT)
        log.error("processes %s of cgroup %s survived cgroup.kill", self.pids(), self.path)
        return False

    def remove(self) -> None:
        """Close the cgroup and remove its directory (an empty cgroup's only)."""
        try:
            self._close_and_remove()
        except OSError as exc:
            log.error("could not remove the cgroup %s: %s", self.path, exc)

    async def stop(self, grace: float) -> None:
        """`terminate`, then `remove`. A cgroup already empty (the common end: every
        process exited with its step) is removed at once: the kernel refuses to remove a
        populated one, so trying first costs one `rmdir` instead of reading its process
        list (0.2 ms of the loop's time per run)."""
        if self._removed_if_empty():
            return
        await self.terminate(grace)
        self.remove()

    def _removed_if_empty(self) -> bool:
        try:
            self._close_and_remove()
        except OSError:  # EBUSY: processes are left in it
            return False
        return True

    def _close_and_remove(self) -> None:
        """Let go of `cgroup.procs` and remove the directory (gone already: done)."""
        with self._lock:
            if self._procs is not None:
                os.close(self._procs)
                self._procs = None
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.path)


class Containment:
    """Where this engine keeps its runs' processes: `mode` is `cgroup` or `subreaper`."""

    def __init__(
        self, mode: str, root: Path | None = None, stale: list[Path] | None = None
    ) -> None:
        self.mode = mode
        self.root = root
        #: directories of this data dir that earlier (crashed) servers left
        self.stale = stale or []

    @classmethod
    def choose(cls, wanted: str, data_path: Path) -> Containment:
        """The mode for `wanted` (`auto`, `cgroup`, `subreaper`): `auto` takes the cgroup
        mode where the server can make cgroups. ContainmentUnavailable when `cgroup` is
        asked for and impossible."""
        if wanted == SUBREAPER:
            return cls(SUBREAPER)
        try:
            root, stale = _make_root(data_path)
        except ContainmentUnavailable as exc:
            if wanted == CGROUP:
                raise
            log.info("runs are contained by the subreaper only: %s", exc)
            return cls(SUBREAPER)
        return cls(CGROUP, root, stale)

    def info(self) -> ContainmentInfo:
        if self.root is None:
            return ContainmentInfo(mode=SUBREAPER, guarantee=SUBREAPER_GUARANTEE)
        return ContainmentInfo(mode=CGROUP, path=str(self.root), guarantee=CGROUP_GUARANTEE)

    def run_cgroup(self, run_id: str) -> RunCgroup | None:
        """The (not yet made) cgroup of a run, or None in subreaper mode."""
        return None if self.root is None else RunCgroup(self.root / f"run-{run_id}")

    def leftovers(self) -> list[RunCgroup]:
        """The run cgroups a previous engine on this data dir left behind."""
        found = []
        for directory in self.stale:
            with contextlib.suppress(OSError):
                found += [RunCgroup(p) for p in sorted(directory.glob("run-*")) if p.is_dir()]
        return found

    async def stop_leftovers(self, grace: float) -> None:
        """Kill and remove the run cgroups earlier servers of this data dir left, then
        their directories."""
        await asyncio.gather(*(group.stop(grace) for group in self.leftovers()))
        for directory in self.stale:
            try:
                directory.rmdir()
            except OSError as exc:
                log.error("could not remove the cgroup %s: %s", directory, exc)
        self.stale = []

    def close(self) -> None:
        """Remove this data dir's cgroup directory once no run cgroup is left in it."""
        if self.root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.root)


def window_orphans(known: Collection[int] = ()) -> list[int]:
    """Processes the engine adopted that are still in its own cgroup, leaving out `known`
    ones: in cgroup mode, only a child a step orphaned before it was moved into its run's
    cgroup can be one. (A step spawned on the loop's thread is a child of the main thread,
    where orphans go, too: the caller passes it among `known`.)"""
    found = []
    for pid in adopted_children(known):
        try:
            line = _cgroup_line(f"/proc/{pid}/cgroup")
        except (OSError, StopIteration):
            continue
        if line == _own_cgroup_line():
            found.append(pid)
    return found


def _cgroup_line(path: str) -> bytes:
    """The cgroup v2 line (`0::/...`) of a /proc/PID/cgroup file."""
    return next(x for x in read_proc(path).splitlines() if x.startswith(b"0::"))


_own_line: tuple[int, bytes] | None = None  # (pid, cgroup v2 line) of this process


def _own_cgroup_line() -> bytes:
    """This process's cgroup v2 line, read once per process (the server is not moved
    between cgroups while it runs)."""
    global _own_line
    if _own_line is None or _own_line[0] != os.getpid():
        _own_line = (os.getpid(), _cgroup_line("/proc/self/cgroup"))
    return _own_line[1]


def _make_root(data_path: Path) -> tuple[Path, list[Path]]:
    """This server's directory for its runs' cgroups, and those earlier servers of the
    same data dir left."""
    base = _own_cgroup_dir()
    digest = hashlib.sha256(str(data_path).encode()).hexdigest()[:16]
    root = base / f"flwd-{digest}-{os.getpid()}"
    try:
        root.mkdir(exist_ok=True)
    except OSError as exc:
        raise ContainmentUnavailable(f"cannot create a cgroup in {base}: {exc.strerror}") from None
    if not (root / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            root.rmdir()
        raise ContainmentUnavailable("this kernel's cgroups have no cgroup.kill (Linux < 5.14)")
    if not (os.access(base / "cgroup.procs", os.W_OK) and os.access(root, os.W_OK)):
        with contextlib.suppress(OSError):
            root.rmdir()
        raise ContainmentUnavailable(f"processes cannot be moved out of {base}")
    stale = []
    for directory in base.glob("flwd-*-*"):
        digest_of, _, pid = directory.name[5:].partition("-")
        if directory == root or not pid.isdigit():
            continue
        if digest_of == digest:
            stale.append(directory)
        elif not _exists(int(pid)):
            with contextlib.suppress(OSError):  # not empty: left for its own data dir's server
                directory.rmdir()
    return root, stale


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
