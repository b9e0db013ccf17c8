"""What the sandbox keeps per run, besides the step: a user id, a cgroup v1 memory group
and a network namespace (see `sandbox.py`, which hands them out and takes them back)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from flwd.engine.spawn import new_network_namespace

log = logging.getLogger(__name__)


class RunUsers:
    """Hands out one user id per active run from `first`..`last` (inclusive)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.range = (first, last)
        self.by_run: dict[str, int] = {}
        self.taken: set[int] = set()
        self.next = first
        self.lock = threading.Lock()

    def get(self, run_id: str) -> int | None:
        return self.by_run.get(run_id)

    def assign(self, run_id: str) -> int | None:
        """The run's id (a new one for a run seen first), None if all are taken."""
        with self.lock:
            if run_id in self.by_run:
                return self.by_run[run_id]
            size = self.last - self.first + 1
            for offset in range(size):
                uid = self.first + (self.next - self.first + offset) % size
                if uid not in self.taken:
                    self.taken.add(uid)
                    self.by_run[run_id] = uid
                    self.next = uid + 1 if uid < self.last else self.first
                    return uid
            return None

    def release(self, run_id: str) -> None:
        with self.lock:
            uid = self.by_run.pop(run_id, None)
            if uid is not None:
                self.taken.discard(uid)


class MemoryGroups:
    """A cgroup v1 memory group per run, below the server's own, where the server may
    make them (root, a v1 `memory` hierarchy): the run's processes are born in it, and a
    process it kills for going past the limit is counted in `memory.oom_control`.

    Making and removing a group each cost about as much as a step's spawn, so a run's
    group, once empty, is kept for a later run (up to `spares` of them)."""

    def __init__(self, spares: int = 32) -> None:
        self.home = _own_v1_group("memory")
        self.base = None if self.home is None else self.home / f"flwd-{os.getpid()}"
        self.spares = spares
        self.made: dict[str, Path] = {}
        #: empty groups of finished runs, with the limit they have
        self.free: list[tuple[Path, int]] = []
        self.limits: dict[Path, int] = {}
        self.count = 0
        self.lock = threading.Lock()
        if self.usable:
            self._sweep()

    @property
    def usable(self) -> bool:
        return self.home is not None and os.geteuid() == 0

    def _sweep(self) -> None:
        """Remove the empty groups that servers no longer running left."""
        assert self.home is not None
        for directory in self.home.glob("flwd-*"):
            pid = directory.name[5:]
            if not pid.isdigit() or _exists(int(pid)):
                continue
            for group in directory.iterdir():
                if group.is_dir():
                    with contextlib.suppress(OSError):
                        group.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()

    def group(self, run_id: str, limit: int) -> Path:
        """The run's group with `limit` bytes of memory (and of memory plus swap, where
        the kernel counts swap); OSError if it cannot be made."""
        with self.lock:
            path = self.made.get(run_id)
            if path is not None:
                return path
            assert self.base is not None
            if self.free:
                path, had = self.free.pop()
                if had != limit:
                    self._limit(path, limit, had)
            else:
                self.count += 1
                path = self.base / f"group-{self.count}"
                path.mkdir(parents=True, exist_ok=True)
                try:
                    self._limit(path, limit, None)
                except OSError:
                    with contextlib.suppress(OSError):
                        path.rmdir()
                    raise
            self.made[run_id] = path
            self.limits[path] = limit
            return path

    @staticmethod
    def _limit(path: Path, limit: int, had: int | None) -> None:
        swap = path / "memory.memsw.limit_in_bytes"
        # memory plus swap may never be below memory alone: the order matters
        order = ["memory.limit_in_bytes", swap.name]
        if had is not None and limit < had:
            order.reverse()
        for name in order:
            if name != swap.name or swap.exists():
                (path / name).write_text(str(limit))

    def remove(self, run_id: str) -> None:
        """The run has ended: its group is kept for another run if it is empty, else
        removed (or left, logged, if a process of it still lives)."""
        with self.lock:
            path = self.made.pop(run_id, None)
            if path is None:
                return
            limit = self.limits.pop(path)
            try:
                empty = not (path / "cgroup.procs").read_text().strip()
            except OSError:
                empty = False
            if empty and len(self.free) < self.spares:
                self.free.append((path, limit))
                return
        try:
            path.rmdir()
        except OSError as exc:
            log.warning("could not remove the memory cgroup %s: %s", path, exc)

    def close(self) -> None:
        """Remove the groups kept for later runs, and the server's directory of them."""
        with self.lock:
            free, self.free = self.free, []
        for path, _ in free:
            with contextlib.suppress(OSError):
                path.rmdir()
        if self.base is not None:
            with contextlib.suppress(OSError):
                self.base.rmdir()


class NetworkNamespaces:
    """A network namespace per run (`network: none` as root), shared by its steps.

    Making one costs more than the rest of a sandboxed spawn, so up to `spares` are made
    ahead by a thread of their own; a run takes one (none was ever used), and closes it
    when it ends. With none made ahead, `take` answers None: the step then gets a new
    namespace of its own at its spawn."""

    def __init__(self, spares: int = 8) -> None:
        self.spares = spares
        self.free: list[int] = []
        self.by_run: dict[str, int] = {}
        self.lock = threading.Lock()
        self.wanted = threading.Event()
        self.filler: threading.Thread | None = None
        self.closed = False

    def take(self, run_id: str) -> int | None:
        with self.lock:
            fd = self.by_run.get(run_id)
            if fd is None and self.free:
                fd = self.by_run[run_id] = self.free.pop()
            if self.filler is None:
                self.filler = threading.Thread(
                    target=self._fill, name="flwd-sandbox-netns", daemon=True
                )
                self.filler.start()
        self.wanted.set()
        return fd

    def release(self, run_id: str) -> None:
        with self.lock:
            fd = self.by_run.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def _fill(self) -> None:
        while not self.closed:
            self.wanted.wait()
            self.wanted.clear()
            while not self.closed and len(self.free) < self.spares:
                try:
                    fd = new_network_namespace()
                except OSError as exc:
                    log.warning("network namespaces are not made ahead: %s", exc)
                    return
                with self.lock:
                    kept = not self.closed  # (closed meanwhile, by another thread)
                    if kept:
                        self.free.append(fd)
                if not kept:
                    os.close(fd)
                    return

    def close(self) -> None:
        with self.lock:
            self.closed = True
            fds, self.free = self.free, []
        self.wanted.set()
        for fd in fds:
            os.close(fd)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def oom_kills(group: Path) -> int:
    """How many processes the kernel killed in `group` for going past its limit."""
    try:
        text = (group / "memory.oom_control").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    # kernels before 4.13 do not count kills: any failure to charge will do
    with contextlib.suppress(OSError, ValueError):
        return int((group / "memory.failcnt").read_text())
    return 0


def _own_v1_group(controller: str) -> Path | None:
    """The directory of this process's group in the cgroup v1 hierarchy of
    `controller`, or None if there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    own = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = path
    if own is None:
        return None
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, kinds = before.split(), after.split()
        if len(kinds) < 3 or kinds[0] != "cgroup" or controller not in kinds[2].split(","):
            continue
        root, mount_point = fields[3], fields[4]
        if own == root or own.startswith(root.rstrip("/") + "/"):
            directory = Path(mount_point) / own[len(root.rstrip("/")) :].lstrip("/")
            if os.access(directory, os.W_OK):
                return directory
    return None
