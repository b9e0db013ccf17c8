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
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

# glibc's values (bits/spawn.h)
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
# room for glibc's posix_spawnattr_t (336 bytes on x86-64), posix_spawn_file_actions_t
# (80) and sigset_t (128) on any architecture
_STRUCT_BYTES = 1024
_SIGSET_BYTES = 256
_THREADS = 2


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


class _Spawner:
    """Worker threads that call `posix_spawn` for the loop: a request is put on a queue,
    its answer comes back with `call_soon_threadsafe`. A process whose caller stopped
    waiting (cancelled) is killed and reaped here."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
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
            for n in range(self.threads):
                name = f"flwd-spawn-{n}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            loop, future, args = self.requests.get()
            if loop is None:  # an orphan to reap
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(args, 0)
                continue
            try:
                *spawn_args, place = args
                pid = _placed(_libc(*spawn_args), place)
            except BaseException as exc:  # handed to the caller
                loop.call_soon_threadsafe(self._settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(self._settle, future, pid, None)

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


_libc = _Libc()
_spawner = _Spawner(_THREADS)


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
) -> int:
    """Start `argv` in a new session with `fds` as its stdin, stdout and stderr; its pid.
    OSError if it cannot be started. The caller reaps it.

    `busy` says the loop has other work (other steps running): the spawn then runs on a
    worker thread. Without, it is made right here, which is quicker than the hop to a
    thread and back when nothing else is waiting for the loop.

    `place(pid)` is called on the spawning thread as soon as the process exists (the
    run's cgroup moves it in); if it raises, the process is killed and reaped and the
    error is the caller's. A spawn with `place` always runs on a worker thread: moving a
    process between cgroups waits for the kernel."""
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
    if not busy and place is None:
        return _libc(path, args, envp, os.fsencode(cwd), fds)
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    _spawner.spawn(started, path, args, envp, os.fsencode(cwd), fds, place)
    return await started


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
