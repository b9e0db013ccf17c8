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
from dataclasses import dataclass, field
from typing import Any

import msgspec

from flwd.engine.output import RunOutput
from flwd.engine.processes import terminate
from flwd.models import JobSpec, Run, StepSpec
from flwd.settings import Settings
from flwd.states import FailureReason, StepStatus

log = logging.getLogger(__name__)
_READ_SIZE = 64 * 1024


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


async def _pump(stream: asyncio.StreamReader | None, sink: Any) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_SIZE):
        await sink.feed(chunk)
    await sink.close()


async def execute_step(
    ctx: StepContext,
    *,
    output: RunOutput,
    stop: asyncio.Event,
    timeout: float | None,
    grace: float,
    owned: set[int],
    on_spawn: Any = None,
) -> Outcome:
    """Run the step once. `stop` set from outside (cancel, run timeout) ends it as
    `cancelled`; the caller turns that into the run's own reason."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *ctx.argv,
            stdin=asyncio.subprocess.DEVNULL,
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
    pgid = proc.pid
    owned.add(proc.pid)
    try:
        if on_spawn is not None:
            await on_spawn(pgid)
        pumps = [
            asyncio.create_task(_pump(proc.stdout, output.stream(ctx.step.id, "stdout"))),
            asyncio.create_task(_pump(proc.stderr, output.stream(ctx.step.id, "stderr"))),
        ]
        exited = asyncio.create_task(_main_exit(proc))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {exited, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        timed_out = not done
        # Whether the main process exited or we are stopping it, nothing of the group may
        # remain: TERM, grace, KILL, and wait until the group is empty.
        await terminate(pgid, grace=grace)
        returncode = await exited
        await _finish_pumps(pumps, output, ctx.step.id)
    except asyncio.CancelledError:
        # cancelled from outside (never the normal path): leave no process behind
        await asyncio.shield(terminate(pgid, grace=0.5))
        raise
    finally:
        owned.discard(proc.pid)
    return _outcome(returncode, timed_out=timed_out, stopped=stop.is_set(), timeout=timeout)


async def _main_exit(proc: asyncio.subprocess.Process) -> int:
    """The main process's exit status, as soon as it has exited.

    On Python 3.11 `Process.wait()` returns only once the output pipes are closed too, and a
    background child holding them open (`sleep 300 &`) would keep the step running until
    that child ends. `returncode` is set at the exit itself, so poll it (with backoff)
    while `wait()` has not answered; without lingering children `wait()` answers first.
    """
    waiter = asyncio.ensure_future(proc.wait())
    delay = 0.005
    try:
        while proc.returncode is None:
            done, _ = await asyncio.wait({waiter}, timeout=delay)
            if done:
                break
            delay = min(delay * 2, 0.2)
    finally:
        waiter.cancel()
    assert proc.returncode is not None
    return proc.returncode


async def _finish_pumps(pumps: list[asyncio.Task[None]], output: RunOutput, step_id: str) -> None:
    # A process that escaped the group (setsid) may still hold a pipe: do not wait forever.
    done, pending = await asyncio.wait(pumps, timeout=2.0)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        if task.exception() is not None:
            log.error("reading output of step %s failed", step_id, exc_info=task.exception())
    if pending:
        await output.note(
            "[flwd: output pipe still held open by an escaped process; stopped reading]",
            step_id=step_id,
        )


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
