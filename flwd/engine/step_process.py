"""Run one attempt of one step: a process in its own session, its output piped into the
run's output pipeline, stopped by timeout or cancel with TERM, a grace period, then KILL.

The attempt is over only when no process of its group remains: a step whose main process
exits while background children linger has those children terminated, otherwise they
would hold the output pipes open (and outlive the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from flwd.engine.output import LineStream, RunOutput
from flwd.engine.processes import WAITED_FOR, terminate
from flwd.engine.spawn import SpawnOptions, reaped, spawn
from flwd.models import JobSpec, Run, StepSpec
from flwd.settings import Settings
from flwd.states import FailureReason, StepStatus, failure_reason_of

log = logging.getLogger(__name__)
#: how long output is still read once a step's processes are gone: a process that escaped
#: the group (setsid) may hold a pipe open
_PIPE_BOUND = 2.0
#: each read of a pipe takes at most this: one stored and published record holds at most
#: this much of lines
_READ_SIZE = 64 * 1024
#: a step whose pipes are still open after this long has its exit watched (its pidfd)
_WATCH_EXIT_AFTER = 0.05
#: without pidfds, a step's exit is polled for: first after this, then twice as long ...
_POLL_FIRST = 0.002
#: ... up to this
_POLL_MAX = 0.1


class StopSignal(asyncio.Event):
    """An `asyncio.Event` that also calls back when set: a running step waits on one
    future resolved by its process, its timeout or this, instead of a task per wait."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        for callback in self._callbacks[:]:
            callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


class StepRefused(Exception):
    """Raised by a `prepare_step` hook that will not have the step run (a sandbox that
    cannot apply what its profile requires): the step is not started and fails with
    reason `error` and this exception's message as its error."""


@dataclass
class StepContext:
    """What `prepare_step` hooks see and may change (`argv`, `env`, and how the process
    is started and judged: `spawn_options`, `notes`, `limit_exceeded`)."""

    run: Run
    job: JobSpec
    step: StepSpec
    settings: Settings
    argv: list[str]
    env: dict[str, str]
    cwd: str
    attempt: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: how the process is started: another user, umask, namespaces ... (`SpawnOptions`)
    spawn_options: SpawnOptions | None = None
    #: lines for the run's log (`warning` level, each as `[flwd: …]`), written before
    #: the step's first attempt starts: what a hook could not do, for instance
    notes: list[str] = field(default_factory=list)
    #: set by a hook that limits the step's resources: given the return code of a step
    #: that failed (negative: the signal that killed it), the message naming the limit it
    #: hit (the step then fails with reason `resource_limit`), or None
    limit_exceeded: Callable[[int], str | None] | None = None
    #: why the step must not run (set by the engine from `StepRefused`)
    refused: str | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    status: StepStatus
    reason: FailureReason | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None


class _StepProcess:
    """One step's process, started by `spawn` and watched by the loop itself: a reader
    callback on each pipe feeds the run's output pipeline; the process is reaped, and
    `wake` resolved (`"exit"`), when both pipes have closed, or through its pidfd for a
    step still running after `_WATCH_EXIT_AFTER`. No transport, protocol, task or thread
    per process: asyncio's subprocess machinery costs the loop more time than the rest of
    a no-op run.

    Back-pressure: while the store's queue is full, reading both pipes pauses (the job
    blocks on its writes), and one task waits for room to resume them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, output: RunOutput, step_id: str) -> None:
        self.loop = loop
        self.output = output
        self.store = output.journal.store
        self.step_id = step_id
        #: read end of each pipe still open -> the line stream it feeds
        self.pipes: dict[int, LineStream] = {}
        self.pid = 0
        self.pidfd: int | None = None
        self.poll_delay = _POLL_FIRST
        #: until it fires, the process's exit is looked for only when its pipes close
        self.exit_timer: asyncio.TimerHandle | None = None
        self.wake: asyncio.Future[str] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.resuming: asyncio.Task[None] | None = None
        self.unbounded = False  # the store's writer failed: read on, do not wait for it

    async def start(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        place: Callable[[int], None] | None = None,
        options: SpawnOptions | None = None,
    ) -> int:
        """Spawn the process (OSError if it cannot be), `place` it (its run's cgroup),
        and start watching it."""
        fds: list[int] = []
        try:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            fds += (out_r, out_w)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds += (err_r, err_w)
            self.pid = await spawn(
                argv,
                cwd=cwd,
                env=env,
                fds=(_devnull(), out_w, err_w),
                busy=bool(WAITED_FOR),
                place=place,
                options=options,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        WAITED_FOR.add(self.pid)
        # Most steps end with their pipes: the exit is then looked for when both are
        # closed, and the pidfd is watched only for a step still running after a while.
        self.exit_timer = self.loop.call_later(_WATCH_EXIT_AFTER, self._watch_exit)
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            self.pipes[fd] = self.output.stream(self.step_id, name)
            self.loop.add_reader(fd, self._read, fd)
        return self.pid

    # -- the process's exit ---------------------------------------------------------------

    def _pipes_closed(self) -> None:
        """Both pipes are closed: most likely the process has just exited."""
        if self.exit_timer is None:
            return  # its exit is watched already
        self.exit_timer.cancel()
        self.exit_timer = None
        if not self._collect(os.WNOHANG):  # not yet (or it closed its output and runs on)
            self._watch_exit()

    def _watch_exit(self) -> None:
        self.exit_timer = None
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfds (old kernel, not Linux): poll
            self.loop.call_later(self.poll_delay, self._poll)
            return
        self.loop.add_reader(self.pidfd, self._reap)

    def _reap(self) -> None:
        assert self.pidfd is not None
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = None
        self._collect(0)

    def _poll(self) -> None:
        if not self._collect(os.WNOHANG):
            self.poll_delay = min(self.poll_delay * 2, _POLL_MAX)
            self.loop.call_later(self.poll_delay, self._poll)

    def _collect(self, flags: int) -> bool:
        """Reap the process if it has exited (`waitpid` with `flags`); True if it had."""
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            log.warning("process %d was reaped elsewhere: exit status 255", self.pid)
            self._exited(255)
            return True
        if pid == 0:
            return False
        self._exited(os.waitstatus_to_exitcode(status))
        return True

    def _exited(self, returncode: int) -> None:
        WAITED_FOR.discard(self.pid)
        reaped(self.pid, returncode)
        self.exited.set_result(returncode)
        _resolve(self.wake, "exit")

    # -- the pipes ------------------------------------------------------------------------

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            log.exception("reading output of step %s failed", self.step_id)
            data = b""
        if not data:
            self._close_pipe(fd)
            return
        try:
            self.pipes[fd].feed(data)
        except Exception:
            log.exception("reading output of step %s failed", self.step_id)
        if self.store.full and self.resuming is None and not self.unbounded:
            self._pause()

    def _close_pipe(self, fd: int) -> None:
        stream = self.pipes.pop(fd)
        if self.resuming is None:
            self.loop.remove_reader(fd)
        os.close(fd)
        try:
            stream.close()
        except Exception:
            log.exception("reading output of step %s failed", self.step_id)
        if not self.pipes and not self.closed.done():
            self.closed.set_result(None)
            if not self.exited.done():
                self._pipes_closed()

    def _pause(self) -> None:
        for fd in self.pipes:
            self.loop.remove_reader(fd)
        self.resuming = self.loop.create_task(self._resume_when_room())

    async def _resume_when_room(self) -> None:
        try:
            await self.store.room()
        except asyncio.CancelledError:
            self.resuming = None
            raise
        except Exception:
            log.exception("waiting for the store while reading step %s", self.step_id)
            self.unbounded = True
        self.resuming = None
        for fd in self.pipes:
            self.loop.add_reader(fd, self._read, fd)

    def abandon(self) -> bool:
        """Stop reading the pipes still open (flushing what was read); True if any was."""
        if self.resuming is not None:
            self.resuming.cancel()  # paused: `_close_pipe` has no reader to remove
        left = sorted(self.pipes)
        for fd in left:
            self._close_pipe(fd)
        self.resuming = None
        return bool(left)


def _resolve(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


async def execute_step(
    ctx: StepContext,
    *,
    output: RunOutput,
    stop: StopSignal,
    timeout: float | None,
    grace: float,
    on_spawn: Callable[[int], None] | None = None,
    place: Callable[[int], None] | None = None,
) -> Outcome:
    """Run the step once. `stop` set from outside (cancel, run timeout) ends it as
    `cancelled`; the caller turns that into the run's own reason. `place` puts the new
    process where its run's processes are kept (`RunCgroup.place`)."""
    loop = asyncio.get_running_loop()
    if ctx.attempt == 0:
        for note in ctx.notes:
            await output.note(f"[flwd: {note}]", step_id=ctx.step.id)
    if ctx.refused is not None:
        await output.note(f"[flwd: {ctx.refused}]", step_id=ctx.step.id)
        return Outcome(status=StepStatus.FAILED, reason=FailureReason.ERROR, error=ctx.refused)
    process = _StepProcess(loop, output, ctx.step.id)
    try:
        pgid = await process.start(ctx.argv, ctx.cwd, ctx.env, place, ctx.spawn_options)
    except OSError as exc:
        message = f"cannot start {ctx.argv[0]!r}: {exc.strerror or exc}"
        reason = failure_reason_of(exc)
        if reason is FailureReason.RESOURCES_EXHAUSTED:
            message += " (the server is out of file descriptors, processes or memory)"
        await output.note(f"[flwd: {message}]", step_id=ctx.step.id)
        return Outcome(status=StepStatus.FAILED, reason=reason, error=message)
    wake = process.wake

    def stopped() -> None:
        _resolve(wake, "stop")

    stop.add_callback(stopped)
    if stop.is_set():
        stopped()
    timer = loop.call_later(timeout, _resolve, wake, "timeout") if timeout else None
    try:
        if on_spawn is not None:
            on_spawn(pgid)
        why = await wake
        timed_out = why == "timeout"
        # Whether the main process exited or we are stopping it, nothing of the group may
        # remain: TERM, grace, KILL, and wait until the group is empty.
        await terminate(pgid, grace=grace)
        returncode = await process.exited
        if not process.closed.done():
            # A process that escaped the group (setsid) may still hold a pipe: do not
            # wait forever.
            await asyncio.wait({process.closed}, timeout=_PIPE_BOUND)
        if process.abandon():
            await output.note(
                "[flwd: output pipe still held open by an escaped process; stopped reading]",
                step_id=ctx.step.id,
            )
        output.flush()  # the step's last output (past the head) before its step.finished
    except asyncio.CancelledError:
        # cancelled from outside (never the normal path): leave no process behind; the
        # process is still reaped by its pidfd's reader once it is gone
        await asyncio.shield(terminate(pgid, grace=0.5))
        process.abandon()
        raise
    finally:
        stop.remove_callback(stopped)
        if timer is not None:
            timer.cancel()
    outcome = _outcome(returncode, timed_out=timed_out, stopped=stop.is_set(), timeout=timeout)
    if outcome.reason is FailureReason.EXIT_CODE and ctx.limit_exceeded is not None:
        limit = ctx.limit_exceeded(returncode)
        if limit is not None:
            outcome = msgspec.structs.replace(
                outcome, reason=FailureReason.RESOURCE_LIMIT, error=f"{limit} ({outcome.error})"
            )
    return outcome


_devnull_fd: int | None = None


def _devnull() -> int:
    """One descriptor of /dev/null for every step's stdin (`subprocess.DEVNULL` opens and
    closes one per spawn, on the loop's thread); close-on-exec, so only the step gets it,
    as its fd 0."""
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _outcome(returncode: int, *, timed_out: bool, stopped: bool, timeout: float | None) -> Outcome:
    sig = -returncode if returncode < 0 else None
    code = returncode if returncode >= 0 else None
    if timed_out:
        return Outcome(
            status=StepStatus.FAILED,
            reason=FailureReason.TIMEOUT,
            exit_code=code,
            signal=sig,
            error=f"step timed out after {timeout:g}s",
        )
    if stopped:
        return Outcome(status=StepStatus.CANCELLED, exit_code=code, signal=sig)
    if returncode == 0:
        return Outcome(status=StepStatus.SUCCESS, exit_code=0)
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        error = f"killed by signal {name}"
    else:
        error = f"exited with code {code}"
    return Outcome(
        status=StepStatus.FAILED,
        reason=FailureReason.EXIT_CODE,
        exit_code=code,
        signal=sig,
        error=error,
    )
