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

from flwd.engine.output import RunOutput
from flwd.engine.processes import terminate
from flwd.models import JobSpec, Run, StepSpec
from flwd.settings import Settings
from flwd.states import FailureReason, StepStatus

log = logging.getLogger(__name__)
#: how long output is still read once a step's processes are gone: a process that escaped
#: the group (setsid) may hold a pipe open
_PIPE_BOUND = 2.0
#: output is fed in pieces of at most this (asyncio reads up to 256 KiB at once): one
#: stored and published record holds at most this much of lines
_READ_SIZE = 64 * 1024
_STDOUT, _STDERR = 1, 2


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


@dataclass
class StepContext:
    """What `prepare_step` hooks see and may change (`argv`, `env`)."""

    run: Run
    job: JobSpec
    step: StepSpec
    settings: Settings
    argv: list[str]
    env: dict[str, str]
    cwd: str
    attempt: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    status: StepStatus
    reason: FailureReason | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None


class _StepProtocol(asyncio.SubprocessProtocol):
    """One step's process, told by callbacks: both pipes' data goes straight into the
    run's output pipeline; `wake` is resolved at the main process's exit (`"exit"`);
    `closed` once both pipes are closed. No task reads or polls.

    Back-pressure: while the store's queue is full, reading both pipes pauses (the job
    blocks on its writes), and one task waits for room to resume them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, output: RunOutput, step_id: str) -> None:
        self.loop = loop
        self.store = output.journal.store
        self.streams = {
            _STDOUT: output.stream(step_id, "stdout"),
            _STDERR: output.stream(step_id, "stderr"),
        }
        self.step_id = step_id
        self.open = {_STDOUT, _STDERR}
        self.transport: asyncio.SubprocessTransport | None = None
        self.wake: asyncio.Future[str] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.resuming: asyncio.Task[None] | None = None
        self.unbounded = False  # the store's writer failed: read on, do not wait for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        if fd not in self.open:  # abandoned: the transport is about to be closed
            return
        try:
            stream = self.streams[fd]
            if len(data) <= _READ_SIZE:
                stream.feed(data)
            else:
                for start in range(0, len(data), _READ_SIZE):
                    stream.feed(data[start : start + _READ_SIZE])
        except Exception:
            log.exception("reading output of step %s failed", self.step_id)
        if self.store.full and self.resuming is None and not self.unbounded:
            self._pause()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd not in self.open:
            return
        self.open.discard(fd)
        try:
            self.streams[fd].close()
        except Exception:
            log.exception("reading output of step %s failed", self.step_id)
        if not self.open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        assert self.transport is not None
        returncode = self.transport.get_returncode()
        assert returncode is not None
        if not self.exited.done():
            self.exited.set_result(returncode)
        _resolve(self.wake, "exit")

    def _pipes(self) -> list[asyncio.ReadTransport]:
        assert self.transport is not None
        pipes = []
        for fd in self.open:
            pipe = self.transport.get_pipe_transport(fd)
            if isinstance(pipe, asyncio.ReadTransport):
                pipes.append(pipe)
        return pipes

    def _pause(self) -> None:
        for pipe in self._pipes():
            pipe.pause_reading()
        self.resuming = self.loop.create_task(self._resume_when_room())

    async def _resume_when_room(self) -> None:
        try:
            await self.store.room()
        except Exception:
            log.exception("waiting for the store while reading step %s", self.step_id)
            self.unbounded = True
        finally:
            self.resuming = None
            for pipe in self._pipes():
                pipe.resume_reading()

    def abandon(self) -> bool:
        """Stop reading the pipes still open (flushing what was read); True if any was."""
        left = sorted(self.open)
        for fd in left:
            self.pipe_connection_lost(fd, None)
        if self.resuming is not None:
            self.resuming.cancel()
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
    owned: set[int],
    on_spawn: Callable[[int], None] | None = None,
) -> Outcome:
    """Run the step once. `stop` set from outside (cancel, run timeout) ends it as
    `cancelled`; the caller turns that into the run's own reason."""
    loop = asyncio.get_running_loop()
    protocol = _StepProtocol(loop, output, ctx.step.id)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            *ctx.argv,
            stdin=_devnull(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ctx.cwd,
            env=ctx.env,
            start_new_session=True,
        )
    except OSError as exc:
        message = f"cannot start {ctx.argv[0]!r}: {exc.strerror or exc}"
        await output.note(f"[flwd: {message}]", step_id=ctx.step.id)
        return Outcome(status=StepStatus.FAILED, reason=FailureReason.ERROR, error=message)
    pgid = transport.get_pid()
    owned.add(pgid)
    wake = protocol.wake

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
        returncode = await protocol.exited
        if not protocol.closed.done():
            # A process that escaped the group (setsid) may still hold a pipe: do not
            # wait forever.
            await asyncio.wait({protocol.closed}, timeout=_PIPE_BOUND)
        if protocol.abandon():
            await output.note(
                "[flwd: output pipe still held open by an escaped process; stopped reading]",
                step_id=ctx.step.id,
            )
    except asyncio.CancelledError:
        # cancelled from outside (never the normal path): leave no process behind
        await asyncio.shield(terminate(pgid, grace=0.5))
        protocol.abandon()
        raise
    finally:
        stop.remove_callback(stopped)
        if timer is not None:
            timer.cancel()
        owned.discard(pgid)
        _close(transport)
    return _outcome(returncode, timed_out=timed_out, stopped=stop.is_set(), timeout=timeout)


_devnull_fd: int | None = None


def _devnull() -> int:
    """One descriptor of /dev/null for every step's stdin (`subprocess.DEVNULL` opens and
    closes one per spawn, on the loop's thread); close-on-exec, so only the step gets it,
    as its fd 0."""
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _close(transport: asyncio.SubprocessTransport) -> None:
    """Close the pipes; the process too once it is known to have exited (closing the
    transport of a process not yet reaped would reap it behind the child watcher)."""
    if transport.get_returncode() is not None:
        transport.close()
        return
    for fd in (_STDOUT, _STDERR):
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None:
            pipe.close()


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


def step_environment(
    base: dict[str, str], job: JobSpec, step: StepSpec, args: dict[str, Any], flwd: dict[str, str]
) -> dict[str, str]:
    """The step's environment: an allow-list of the server's, the job's and step's `env`,
    one `FLWD_ARG_<NAME>` per argument, then flwd's own variables (which win)."""
    env = dict(base)
    env.update(job.env)
    env.update(step.env)
    for name, value in args.items():
        key = "FLWD_ARG_" + "".join(c if c.isalnum() else "_" for c in name).upper()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif value is None:
            text = ""
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            text = msgspec.json.encode(value).decode()
        if "\0" not in text:
            env[key] = text
    env.update(flwd)
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: Server environment variables a step inherits; everything else (tokens, cloud keys, the
#: server's own FLWD_* settings) stays out. Security profiles may narrow this further.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
)


def inherited_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env
