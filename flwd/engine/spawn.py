"""Starting a step's process without stopping the event loop.

`subprocess.Popen` (like `os.posix_spawn`) holds the GIL while the kernel makes the child,
and a vfork-style spawn returns only once the child has called `execve`: for each step the
event loop, and with it every other run, stands still for 0.1-0.3 ms. Here glibc's
`posix_spawn` is called through `ctypes`, which lets go of the GIL for the call, from a
small pool of threads: the loop goes on while the child starts. (With no other step
running, the hop to a thread costs more than it saves, and the call is made on the loop's
thread.)

What the child gets is what `Popen(..., start_new_session=True, close_fds=True)` gives it:
its own session and process group (`POSIX_SPAWN_SETSID`), the working directory
(`posix_spawn_file_actions_addchdir_np`), the three standard descriptors and no other
(`posix_spawn_file_actions_addclosefrom_np`), an empty signal mask, and every signal at its
default disposition (Python ignores SIGPIPE and SIGXFSZ, and an ignored signal would stay
ignored across `execve`). A program name without a slash is looked up in the `PATH` of the
step's environment, as `Popen` does.

Where any of this is missing (not glibc, glibc older than 2.34), `spawn` uses `Popen` on the
loop's thread instead: slower under load, and only SIGPIPE, SIGXFZ and SIGXFSZ are set back
to their default dispositions; otherwise the same for the step.

**Spawn options** (`SpawnOptions`, which a sandbox sets on a step through
`StepContext.spawn_options`): another user, a umask, no-new-privileges, a network namespace
of its own and cgroup v1 groups to be born in. Each of these is a property of the calling
*thread* in Linux (credentials, the `fs_struct` once unshared, the no-new-privs bit, the
network namespace, a v1 cgroup membership), and a child inherits its parent thread's. So a
spawn with options is made on a worker thread of its own pool that takes them on just for
that `posix_spawn` and drops them right after: the child is born with all of them, before
it runs any code of its own, for no exec more than a plain spawn. Credentials are changed
with the raw system calls (glibc's wrappers would change every thread of the server), the
saved user id staying 0 so that the thread can return to root. See `options_supported`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# glibc's values (bits/spawn.h)
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
# room for glibc's posix_spawnattr_t (336 bytes on x86-64), posix_spawn_file_actions_t
# (80) and sigset_t (128) on any architecture
_STRUCT_BYTES = 1024
_SIGSET_BYTES = 256
_THREADS = 2
# <linux/prctl.h>, <linux/sched.h>
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_FS = 0x00000200
_CLONE_NEWNET = 0x40000000
#: numbers of the credential system calls (setgroups, setresuid, setresgid), per machine
_CREDENTIAL_CALLS = {
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149),
}


class _Libc:
    """glibc's posix_spawn and friends, or `usable` False."""

    def __init__(self) -> None:
        self.usable = False
        if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            self.spawn = libc.posix_spawn
            self.fa_init = libc.posix_spawn_file_actions_init
            self.fa_destroy = libc.posix_spawn_file_actions_destroy
            self.fa_dup2 = libc.posix_spawn_file_actions_adddup2
            self.fa_chdir = libc.posix_spawn_file_actions_addchdir_np
            self.fa_closefrom = libc.posix_spawn_file_actions_addclosefrom_np
            self.attr_init = libc.posix_spawnattr_init
            self.attr_destroy = libc.posix_spawnattr_destroy
            self.attr_setflags = libc.posix_spawnattr_setflags
            self.attr_setsigdefault = libc.posix_spawnattr_setsigdefault
            self.attr_setsigmask = libc.posix_spawnattr_setsigmask
            sigemptyset, sigfillset = libc.sigemptyset, libc.sigfillset
        except (OSError, AttributeError):
            return
        self.spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        self.attr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self.all_signals = ctypes.create_string_buffer(_SIGSET_BYTES)
        self.no_signals = ctypes.create_string_buffer(_SIGSET_BYTES)
        if sigfillset(self.all_signals) != 0 or sigemptyset(self.no_signals) != 0:
            return
        self.usable = True
        self.unshare = libc.unshare
        self.setns = libc.setns
        self.prctl = libc.prctl
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.credential_calls = _CREDENTIAL_CALLS.get(platform.machine())

    def __call__(
        self,
        path: bytes,
        argv: Any,
        envp: Any,
        cwd: bytes,
        fds: tuple[int, int, int],
    ) -> int:
        """Spawn (on a worker thread: ctypes lets go of the GIL for each call)."""
        actions = ctypes.create_string_buffer(_STRUCT_BYTES)
        attr = ctypes.create_string_buffer(_STRUCT_BYTES)
        _check(self.fa_init(actions))
        try:
            _check(self.attr_init(attr))
            try:
                for target, fd in enumerate(fds):
                    _check(self.fa_dup2(actions, fd, target))
                _check(self.fa_chdir(actions, cwd))
                _check(self.fa_closefrom(actions, 3))
                flags = _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK
                _check(self.attr_setflags(attr, flags))
                _check(self.attr_setsigdefault(attr, self.all_signals))
                _check(self.attr_setsigmask(attr, self.no_signals))
                pid = ctypes.c_int(0)
                _check(self.spawn(ctypes.byref(pid), path, actions, attr, argv, envp))
                return pid.value
            finally:
                self.attr_destroy(attr)
        finally:
            self.fa_destroy(actions)


def _check(code: int) -> None:
    # the posix_spawn functions return an error number rather than setting errno
    if code != 0:
        raise OSError(code, os.strerror(code))


def _checked_call(result: int) -> None:
    # the other libc functions return -1 and set errno
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass(frozen=True, kw_only=True)
class SpawnOptions:
    """How a step's process is started beyond `spawn`'s defaults; `None`/empty: as the
    server. Applied before the process runs any code of its own (see the module).

    - `uid`, `gid`: the user and group it runs as, with no supplementary group (the
      server must be root: `options_supported`).
    - `umask`: its file-creation mask.
    - `no_new_privileges`: set-user-id programs and file capabilities cannot raise its
      privileges (`PR_SET_NO_NEW_PRIVS`), nor those of anything it starts.
    - `new_network`: a network namespace of its own, with only a loopback interface,
      which is down (root only).
    - `network`: instead, a descriptor of the network namespace to be born in (one
      `new_network_namespace` made, for instance, shared by a run's steps).
    - `cgroups`: pairs of cgroup v1 directories: the process is born in the first of
      each pair (the spawning thread joins it for the spawn), and the thread returns to
      the second, its own group in that hierarchy.
    """

    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    no_new_privileges: bool = False
    new_network: bool = False
    network: int | None = None
    cgroups: tuple[tuple[str, str], ...] = ()


def options_supported() -> dict[str, bool]:
    """Which `SpawnOptions` fields this server can apply: `user` and `network` need root
    (and, for `user`, a machine whose credential system calls are known here), the others
    only glibc's `posix_spawn`."""
    usable = _libc.usable
    root = os.geteuid() == 0
    return {
        "user": usable and root and _libc.credential_calls is not None,
        "umask": usable,
        "no_new_privileges": usable,
        "network": usable and root,
        "cgroups": usable and root,
    }


class _SpoiledThread(Exception):
    """A spawning thread could not drop what it took on for a spawn: it stops serving."""


class _Sandbox:
    """What a spawning thread of a sandbox pool keeps to take options on and off."""

    def __init__(self, no_new_privileges: bool) -> None:
        _checked_call(_libc.unshare(_CLONE_FS))  # a umask of this thread's own
        if no_new_privileges:
            one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
            _checked_call(_libc.prctl(_PR_SET_NO_NEW_PRIVS, one, zero, zero, zero))
        self.tid = str(threading.get_native_id()).encode()
        self.network: int | None = None
        self.groups = os.getgroups()
        self.ids = (os.getresuid(), os.getresgid())

    def spawn(self, options: SpawnOptions, spawn_args: tuple[Any, ...]) -> int:
        """Take `options` on, spawn, take them off. _SpoiledThread if this thread could
        not return to what it was (the process, if started, is killed)."""
        joined: list[str] = []
        pid: int | None = None
        umask: int | None = None
        try:
            for join, home in options.cgroups:
                joined.append(home)
                _write_tid(join, self.tid)
            if options.new_network or options.network is not None:
                if self.network is None:
                    self.network = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                if options.network is not None:
                    _checked_call(_libc.setns(options.network, _CLONE_NEWNET))
                else:
                    _checked_call(_libc.unshare(_CLONE_NEWNET))
            if options.umask is not None:
                umask = os.umask(options.umask)
            if options.uid is not None:
                self._become(options.uid, options.gid)
            pid = _libc(*spawn_args)
            return pid
        finally:
            try:
                self._drop(options, umask, joined)
            except OSError as exc:
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                raise _SpoiledThread(f"cannot drop the options of a spawn: {exc}") from exc

    def _drop(self, options: SpawnOptions, umask: int | None, joined: list[str]) -> None:
        if options.uid is not None:
            self._return()
        if umask is not None:
            os.umask(umask)
        if self.network is not None and (options.new_network or options.network is not None):
            _checked_call(_libc.setns(self.network, _CLONE_NEWNET))
        for home in joined:
            _write_tid(home, self.tid)

    def _become(self, uid: int, gid: int | None) -> None:
        calls = _libc.credential_calls
        assert calls is not None
        setgroups, setresuid, setresgid = calls
        group = uid if gid is None else gid
        try:
            _checked_call(_system_call(setgroups, 0, 0))
            _checked_call(_system_call(setresgid, group, group, group))
            # the saved uid stays 0: this thread can become root again; the child's is
            # set to its effective uid when it execs
            _checked_call(_system_call(setresuid, uid, uid, 0))
        except OSError:
            self._return()
            raise

    def _return(self) -> None:
        calls = _libc.credential_calls
        assert calls is not None
        setgroups, setresuid, setresgid = calls
        (ruid, euid, suid), (rgid, egid, sgid) = self.ids
        _checked_call(_system_call(setresuid, ruid, euid, suid))
        _checked_call(_system_call(setresgid, rgid, egid, sgid))
        groups = (ctypes.c_uint * max(len(self.groups), 1))(*self.groups)
        _checked_call(_system_call(setgroups, len(self.groups), ctypes.addressof(groups)))


def _system_call(number: int, *args: int) -> int:
    # syscall(2) reads each argument as a long: pass them so
    return int(_libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args)))


def new_network_namespace() -> int:
    """A descriptor of a new network namespace (only a loopback interface, down), for
    `SpawnOptions.network`; closing it (and the end of every process in it) frees it.
    Made on the calling thread, which then returns to its own namespace: call it on a
    thread of your own (it takes about as long as a spawn), which must stop if this
    raises `SystemExit` (it could not return). Root only; OSError otherwise."""
    if not _libc.usable:
        raise OSError(errno.ENOTSUP, "network namespaces need glibc")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _checked_call(_libc.unshare(_CLONE_NEWNET))
        try:
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if _libc.setns(own, _CLONE_NEWNET) != 0:
                # this thread cannot be left in another namespace: the server would be
                raise SystemExit("flwd: cannot return a thread to the server's network")
    finally:
        os.close(own)


def _write_tid(directory: str, tid: bytes) -> None:
    fd = os.open(os.path.join(directory, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, tid)
    finally:
        os.close(fd)


class _Spawner:
    """Worker threads that call `posix_spawn` for the loop: a request is put on a queue,
    its answer comes back with `call_soon_threadsafe`. A process whose caller stopped
    waiting (cancelled) is killed and reaped here.

    A sandbox pool (`sandbox` not None) serves spawns with `SpawnOptions`: each of its
    threads has a umask of its own and, with `sandbox` True, the no-new-privs bit, which
    a thread cannot drop (hence one pool for each)."""

    def __init__(self, threads: int, sandbox: bool | None = None) -> None:
        self.threads = threads
        self.sandbox = sandbox
        self.requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.started = False

    def spawn(self, future: asyncio.Future[int], *args: Any) -> None:
        self._start()
        self.requests.put((future.get_loop(), future, args))

    def spawn_reaper(self, pid: int) -> None:
        """Have a worker thread reap `pid` (killed already)."""
        self._start()
        self.requests.put((None, None, pid))

    def _start(self) -> None:
        if not self.started:
            self.started = True
            for _ in range(self.threads):
                self._add_thread()

    def _add_thread(self) -> None:
        name = "flwd-spawn" if self.sandbox is None else "flwd-spawn-sandbox"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        sandbox: _Sandbox | None = None
        setup: BaseException | None = None
        if self.sandbox is not None:
            try:
                sandbox = _Sandbox(self.sandbox)
            except OSError as exc:  # every spawn of this thread is refused with it
                setup = exc
        while True:
            loop, future, args = self.requests.get()
            if loop is None:  # an orphan to reap
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(args, 0)
                continue
            spoiled = False
            try:
                *spawn_args, place, options = args
                if setup is not None:
                    raise setup
                if sandbox is not None:
                    try:
                        pid = sandbox.spawn(options, tuple(spawn_args))
                    except _SpoiledThread:
                        spoiled = True
                        raise
                    pid = _placed(pid, place)
                else:
                    started_at = time.perf_counter()
                    pid = _placed(_libc(*spawn_args), place)
                    spawn_times.note(time.perf_counter() - started_at)
            except BaseException as exc:  # handed to the caller
                if spoiled:
                    log.critical("a spawning thread is replaced: %s", exc)
                    exc = OSError(errno.EPERM, f"the step's sandbox could not be set up: {exc}")
                loop.call_soon_threadsafe(self._settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(self._settle, future, pid, None)
            if spoiled:
                self._add_thread()
                return

    def _settle(
        self, future: asyncio.Future[int], pid: int | None, error: BaseException | None
    ) -> None:
        if future.cancelled():
            if pid is not None:  # the process started all the same: not left unwatched
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                self.requests.put((None, None, pid))
        elif error is not None:
            future.set_exception(error)
        else:
            assert pid is not None
            future.set_result(pid)


class SpawnTimes:
    """How long the last spawns of steps took (with their placement in the run's cgroup),
    on the loop's thread or on a worker thread: the median of the last `size` says where
    the next one is made while other steps run.

    The thread that calls `posix_spawn` waits until the child has called `exec`, and
    `place` until the kernel has moved it. With a CPU for the child, that is about a
    millisecond even with 16 steps starting at once, and making the spawn on the loop's
    thread costs less than handing it to a worker thread and its answer back (the
    thread's wake-up, the GIL going back and forth, the loop's wake-up): 1 ms less CPU
    per no-op run at 16 at a time, and up to a fifth more runs per second. When other
    processes keep the CPUs busy, the child waits for one before its `exec` (7 ms and
    more here beside two CPU-bound processes), and the loop must not wait with it:
    spawns then go to the worker threads, which keep measuring, until the median is
    back under `limit` (docs/decisions.md, "Spawns on the loop's thread while they are
    quick")."""

    def __init__(self, limit: float = 0.003, size: int = 32) -> None:
        self.limit = limit
        self.recent: collections.deque[float] = collections.deque(maxlen=size)

    def note(self, seconds: float) -> None:
        self.recent.append(seconds)

    def quick(self) -> bool:
        return not self.recent or statistics.median(self.recent) < self.limit


spawn_times = SpawnTimes()
_libc = _Libc()
_spawner = _Spawner(_THREADS)
#: sandbox pools, by whether their threads have the no-new-privs bit
_sandbox_spawners = {flag: _Spawner(_THREADS, sandbox=flag) for flag in (False, True)}


def _strings(items: list[bytes]) -> Any:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _executable(program: str, env: dict[str, str]) -> str:
    if "/" in program:
        return program
    found = shutil.which(program, path=os.pathsep.join(os.get_exec_path(env)))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


async def spawn(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    fds: tuple[int, int, int],
    busy: bool = True,
    place: Callable[[int], None] | None = None,
    options: SpawnOptions | None = None,
) -> int:
    """Start `argv` in a new session with `fds` as its stdin, stdout and stderr; its pid.
    OSError if it cannot be started. The caller reaps it.

    The spawn is made right here, on the loop's thread, unless `busy` (the loop has other
    work: other steps run) and spawns have been slow lately (`SpawnTimes`): then on a
    worker thread, so that the loop goes on while the child starts.

    `place(pid)` is called on the spawning thread as soon as the process exists (the
    run's cgroup moves it in); if it raises, the process is killed and reaped and the
    error is the caller's. Moving a process between cgroups waits for the kernel
    (0.05-0.3 ms here; much more on kernels without `favordynmods` under load): the
    move's time counts in `SpawnTimes` with the spawn's.

    `options` (see `SpawnOptions`) are applied on a worker thread of a sandbox pool;
    OSError (`ENOTSUP`) where this server cannot apply them (`options_supported`)."""
    if options == _NO_OPTIONS:
        options = None
    if options is not None and not _libc.usable:
        raise OSError(errno.ENOTSUP, "sandboxed steps need glibc's posix_spawn")
    arguments = [os.fsencode(arg) for arg in argv]
    variables = [os.fsencode(f"{key}={value}") for key, value in env.items()]
    if any(b"\0" in item for item in (*arguments, *variables)) or "\0" in cwd:
        raise OSError(errno.EINVAL, "embedded null byte in the command or its environment")
    if not _libc.usable:
        if place is not None:
            work = asyncio.ensure_future(
                asyncio.to_thread(_popen, argv, cwd=cwd, env=env, fds=fds, place=place)
            )
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:  # the process starts all the same: not unwatched
                work.add_done_callback(_abandon)
                raise
        return _popen(argv, cwd=cwd, env=env, fds=fds)
    path = os.fsencode(_executable(argv[0], env))
    args, envp = _strings(arguments), _strings(variables)
    if options is None and (not busy or spawn_times.quick()):
        started_at = time.perf_counter()
        pid = _placed(_libc(path, args, envp, os.fsencode(cwd), fds), place)
        spawn_times.note(time.perf_counter() - started_at)
        return pid
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    spawner = _spawner if options is None else _sandbox_spawners[options.no_new_privileges]
    spawner.spawn(started, path, args, envp, os.fsencode(cwd), fds, place, options)
    return await started


_NO_OPTIONS = SpawnOptions()


def _abandon(started: asyncio.Future[int]) -> None:
    """Kill a process whose caller stopped waiting for it; a spawning thread reaps it."""
    if started.cancelled() or started.exception() is not None:
        return
    pid = started.result()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    reaped(pid, -signal.SIGKILL)  # its Popen object is not to reap it
    _spawner.spawn_reaper(pid)


def _placed(pid: int, place: Callable[[int], None] | None) -> int:
    if place is None:
        return pid
    try:
        place(pid)
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        reaped(pid, -signal.SIGKILL)
        raise
    return pid


#: processes started by `Popen`, until reaped: a Popen object collected while its process
#: runs would reap it behind the caller's back
_popens: dict[int, subprocess.Popen[bytes]] = {}


def reaped(pid: int, returncode: int) -> None:
    """Tell that the caller reaped `pid` (whichever way it was started)."""
    process = _popens.pop(pid, None)
    if process is not None:
        process.returncode = returncode


def _popen(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    fds: tuple[int, int, int],
    place: Callable[[int], None] | None = None,
) -> int:
    process = subprocess.Popen(
        argv,
        stdin=fds[0],
        stdout=fds[1],
        stderr=fds[2],
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    _popens[process.pid] = process
    return _placed(process.pid, place)
