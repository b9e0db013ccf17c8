"""Execute one run: its steps as a DAG, retries, timeouts, cancel, result and artifacts.

Every state change is written with the event that announces it, in one transaction.
Whatever happens — a step failing, a cancel, a timeout, a bug — the run's terminal state is
written in `finally`, after no process of the run remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pluggy

from flwd.engine.artifacts import collect_artifacts
from flwd.engine.executor import (
    Outcome,
    StepContext,
    execute_step,
    inherited_environment,
    step_environment,
)
from flwd.engine.output import Redactor, RunOutput
from flwd.engine.processes import terminate
from flwd.events.journal import Journal
from flwd.models import JobSpec, Result, Run, StepSpec, utcnow
from flwd.settings import Settings
from flwd.states import FailureReason, RunStatus, StepStatus
from flwd.storage import runs as rows

log = logging.getLogger(__name__)
_RESULT_LIMIT = 4 * 1024 * 1024


@dataclass
class ActiveRun:
    """A run this process is executing or about to execute (held only in memory)."""

    run: Run
    job: JobSpec
    args: dict[str, Any]
    redactor: Redactor
    concurrency_key: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    shutting_down: bool = False
    timed_out: bool = False


class RunExecutor:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        pm: pluggy.PluginManager,
        owned: set[int],
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.pm = pm
        self.owned = owned
        self.work_root = settings.data_path / "work"
        self.blob_root = settings.data_path / "artifacts"
        self._base_env = inherited_environment()

    async def execute(self, active: ActiveRun) -> None:
        run, job = active.run, active.job
        workdir = self.work_root / run.run_id
        output = RunOutput(
            self.journal,
            run.run_id,
            job.id,
            active.redactor,
            line_limit=self.settings.line_limit,
            head_bytes=self.settings.output_head_bytes,
            tail_bytes=self.settings.output_tail_bytes,
        )
        outcomes: dict[str, Outcome] = {}
        results: dict[str, Any] = {}
        timer: asyncio.TimerHandle | None = None
        error: str | None = None
        try:
            await asyncio.to_thread(_prepare_workdir, workdir, active.args)
            await self.journal.append(
                "run.started",
                run.run_id,
                job.id,
                {"status": "running"},
                statements=[rows.update_run(run.run_id, status="running", started_at=utcnow())],
            )
            if job.timeout:
                timer = asyncio.get_running_loop().call_later(job.timeout, _time_out, active)
            await self._run_dag(active, workdir, output, outcomes, results)
        except Exception as exc:  # a bug or a storage failure: still end the run properly
            log.exception("run %s failed inside flwd", run.run_id)
            error = active.redactor.mask_text(f"internal error: {exc}")
        finally:
            if timer is not None:
                timer.cancel()
            await self._finish(active, workdir, output, outcomes, results, error)

    async def _run_dag(
        self,
        active: ActiveRun,
        workdir: Path,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
    ) -> None:
        steps = {step.id: step for step in active.job.steps}
        state = dict.fromkeys(steps, StepStatus.PENDING)
        running: dict[asyncio.Task[Outcome], StepSpec] = {}
        while True:
            if not active.stop.is_set():
                for step in steps.values():
                    ready = all(state[n] is StepStatus.SUCCESS for n in step.needs)
                    if state[step.id] is StepStatus.PENDING and ready:
                        state[step.id] = StepStatus.RUNNING
                        task = asyncio.create_task(
                            self._run_step(active, step, workdir, output, results)
                        )
                        running[task] = step
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                step = running.pop(task)
                outcome = task.result()
                state[step.id] = outcome.status
                outcomes[step.id] = outcome
                if outcome.status is StepStatus.FAILED:
                    await self._skip_dependants(active, step.id, steps, state, outcomes)
        for step_id, status in state.items():
            if status is StepStatus.PENDING:  # never started: the run was stopped
                outcomes[step_id] = Outcome(status=StepStatus.CANCELLED)
                await self._step_finished(active, step_id, outcomes[step_id], attempt=0)

    async def _skip_dependants(
        self,
        active: ActiveRun,
        failed: str,
        steps: dict[str, StepSpec],
        state: dict[str, StepStatus],
        outcomes: dict[str, Outcome],
    ) -> None:
        blocked = {failed}
        changed = True
        while changed:
            changed = False
            for step in steps.values():
                if state[step.id] is StepStatus.PENDING and blocked.intersection(step.needs):
                    state[step.id] = StepStatus.SKIPPED
                    blocked.add(step.id)
                    changed = True
                    outcomes[step.id] = Outcome(
                        status=StepStatus.SKIPPED,
                        reason=FailureReason.DEPENDENCY_FAILED,
                        error=f"skipped because step '{failed}' failed",
                    )
                    await self._step_finished(active, step.id, outcomes[step.id], attempt=0)

    async def _run_step(
        self,
        active: ActiveRun,
        step: StepSpec,
        workdir: Path,
        output: RunOutput,
        results: dict[str, Any],
    ) -> Outcome:
        run, job = active.run, active.job
        result_file = workdir / ".flwd" / "results" / f"{step.id}.json"
        outcome = Outcome(status=StepStatus.CANCELLED)
        for attempt in range(step.retries + 1):
            flwd_env = {
                "FLWD_RUN_ID": run.run_id,
                "FLWD_JOB_ID": job.id,
                "FLWD_STEP_ID": step.id,
                "FLWD_ATTEMPT": str(attempt),
                "FLWD_RUN_DIR": str(workdir),
                "FLWD_ARGS_FILE": str(workdir / ".flwd" / "args.json"),
                "FLWD_RESULT_FILE": str(result_file),
                "FLWD_ARTIFACTS_DIR": str(workdir / ".flwd" / "artifacts"),
            }
            ctx = StepContext(
                run=run,
                job=job,
                step=step,
                settings=self.settings,
                attempt=attempt,
                argv=list(step.argv),
                cwd=str(workdir),
                env=step_environment(self._base_env, job, step, active.args, flwd_env),
            )
            self.pm.hook.prepare_step(context=ctx)
            await self.journal.append(
                "step.started",
                run.run_id,
                job.id,
                {"step_id": step.id, "attempt": attempt},
                statements=[
                    rows.update_step(
                        run.run_id, step.id, status="running", attempt=attempt, started_at=utcnow()
                    )
                ],
            )

            async def record_pgid(pgid: int, step_id: str = step.id) -> None:
                await self.journal.store.submit([rows.update_step(run.run_id, step_id, pgid=pgid)])

            outcome = await execute_step(
                ctx,
                output=output,
                stop=active.stop,
                timeout=step.timeout,
                grace=self.settings.kill_grace,
                owned=self.owned,
                on_spawn=record_pgid,
            )
            if outcome.status is StepStatus.SUCCESS:
                outcome = await self._collect_result(active, step, result_file, results, outcome)
            last = outcome.status is not StepStatus.FAILED or attempt == step.retries
            await self._step_finished(
                active,
                step.id,
                outcome,
                attempt=attempt,
                retrying=not last and not active.stop.is_set(),
            )
            if last or active.stop.is_set():
                return outcome
            with contextlib.suppress(FileNotFoundError):
                result_file.unlink()
        return outcome

    async def _collect_result(
        self,
        active: ActiveRun,
        step: StepSpec,
        path: Path,
        results: dict[str, Any],
        outcome: Outcome,
    ) -> Outcome:
        problem: str | None = None
        try:
            raw = await asyncio.to_thread(_read_result, path)
            if raw is None:
                return outcome
            value = msgspec.json.decode(raw)
        except _ResultProblem as exc:
            problem = str(exc)
        except msgspec.DecodeError as exc:
            problem = f"result file is not valid JSON: {exc}"
        if problem is not None:
            return Outcome(
                status=StepStatus.FAILED,
                reason=FailureReason.ERROR,
                exit_code=0,
                error=active.redactor.mask_text(problem),
            )
        value = active.redactor.value(value)
        results[step.id] = value
        await self.journal.append(
            "step.output",
            active.run.run_id,
            active.job.id,
            {"step_id": step.id, "value": value},
            statements=[
                rows.update_step(active.run.run_id, step.id, result=msgspec.json.encode(value))
            ],
        )
        return outcome

    async def _step_finished(
        self,
        active: ActiveRun,
        step_id: str,
        outcome: Outcome,
        *,
        attempt: int,
        retrying: bool = False,
    ) -> None:
        data: dict[str, Any] = {
            "step_id": step_id,
            "status": outcome.status.value,
            "attempt": attempt,
            "reason": outcome.reason.value if outcome.reason else None,
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "error": outcome.error,
        }
        if retrying:
            data["retrying"] = True
        fields: dict[str, Any] = {
            "status": StepStatus.PENDING.value if retrying else outcome.status.value,
            "reason": data["reason"],
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "error": outcome.error,
            "finished_at": utcnow(),
            "pgid": None,
        }
        await self.journal.append(
            "step.finished",
            active.run.run_id,
            active.job.id,
            data,
            statements=[rows.update_step(active.run.run_id, step_id, **fields)],
        )

    async def _finish(
        self,
        active: ActiveRun,
        workdir: Path,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
        error: str | None,
    ) -> None:
        run, job = active.run, active.job
        try:
            # processes that left their step's group but carry this run's id
            await terminate(None, run_id=run.run_id, grace=self.settings.kill_grace)
            await output.finish()
            artifacts = await collect_artifacts(
                workdir / ".flwd" / "artifacts", self.blob_root, run.run_id, active.redactor
            )
            for artifact in artifacts:
                await self.journal.store.submit([rows.insert_artifact(artifact)])
        except Exception as exc:
            log.exception("finishing run %s failed", run.run_id)
            error = error or active.redactor.mask_text(f"internal error: {exc}")
        result = _run_result(job, results)
        fields = _terminal_fields(active, outcomes, error)
        if fields["status"] == RunStatus.SUCCESS.value and result is not None and job.result_schema:
            problems = _schema_problems(job.result_schema, result.value)
            if problems:
                fields.update(
                    status=RunStatus.FAILED.value,
                    reason=FailureReason.ERROR.value,
                    error="result does not match result_schema: " + "; ".join(problems),
                )
        fields["finished_at"] = utcnow()
        if result is not None:
            fields["result"] = msgspec.json.encode(result)
        event = {
            k: v
            for k, v in fields.items()
            if k in ("status", "reason", "error", "exit_code", "signal")
        }
        try:
            await self.journal.append(
                "run.finished",
                run.run_id,
                job.id,
                event,
                statements=[rows.update_run(run.run_id, **fields)],
            )
        finally:
            # the work dir holds the unmasked arguments: gone before anyone is told "done"
            try:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
            finally:
                active.done.set()


def _time_out(active: ActiveRun) -> None:
    active.timed_out = True
    active.stop.set()


def _prepare_workdir(workdir: Path, args: dict[str, Any]) -> None:
    (workdir / ".flwd" / "results").mkdir(parents=True, exist_ok=True)
    (workdir / ".flwd" / "artifacts").mkdir(parents=True, exist_ok=True)
    args_file = workdir / ".flwd" / "args.json"
    # the only place unmasked secret arguments touch the disk: private, and removed with
    # the work directory when the run ends
    fd = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.encode(args))


class _ResultProblem(Exception):
    pass


def _read_result(path: Path) -> bytes | None:
    """The bytes of a step's result file, None when it wrote none.

    Only a regular file is read: never through a symbolic link (a job could otherwise
    publish any file the server can read, as with artifacts) and never a FIFO, whose
    open or read would wait forever for a writer that is gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _ResultProblem("result file is a symbolic link; write a regular file") from None
        raise _ResultProblem(f"result file cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _ResultProblem("result file is not a regular file")
        data = handle.read(_RESULT_LIMIT + 1)
    if len(data) > _RESULT_LIMIT:
        raise _ResultProblem(f"result file is larger than the {_RESULT_LIMIT} bytes allowed")
    return data


def _run_result(job: JobSpec, results: dict[str, Any]) -> Result | None:
    if not results:
        return None
    order = [step.id for step in job.steps if step.id in results]
    return Result(value=results[order[-1]], steps={k: results[k] for k in order})


def _schema_problems(schema: dict[str, Any], value: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"/{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def _terminal_fields(
    active: ActiveRun, outcomes: dict[str, Outcome], error: str | None
) -> dict[str, Any]:
    if error is not None:
        return {
            "status": RunStatus.FAILED.value,
            "reason": FailureReason.ERROR.value,
            "error": error,
        }
    if active.cancel_requested or active.shutting_down:
        why = "cancelled" if active.cancel_requested else "cancelled: the server shut down"
        return {"status": RunStatus.CANCELLED.value, "error": why}
    if active.timed_out:
        return {
            "status": RunStatus.FAILED.value,
            "reason": FailureReason.TIMEOUT.value,
            "error": f"run timed out after {active.job.timeout:g}s",
        }
    failed = [(k, o) for k, o in outcomes.items() if o.status is StepStatus.FAILED]
    if not failed:
        return {"status": RunStatus.SUCCESS.value}
    step_id, outcome = failed[0]
    skipped = [k for k, o in outcomes.items() if o.status is StepStatus.SKIPPED]
    reason = FailureReason.DEPENDENCY_FAILED if skipped else outcome.reason
    message = f"step '{step_id}' failed: {outcome.error}"
    if skipped:
        message += "; skipped: " + ", ".join(f"'{s}'" for s in skipped)
    return {
        "status": RunStatus.FAILED.value,
        "reason": reason.value if reason else FailureReason.EXIT_CODE.value,
        "error": message,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
    }
