"""Execute one run: its steps as a DAG, retries, timeouts, cancel, result and artifacts.

Every state change is written with the event that announces it, in one transaction.
Whatever happens — a step failing, a cancel, a timeout, a bug — the run's terminal state is
written in `finally`, after no process of the run remains.

Only two commits are waited for on the way: each step's `step.started` before its process
is spawned (so that, after a crash, the run is found `running` and its processes are
killed rather than run twice), and `run.finished` before the run is reported over. The
other writes (run.started, the process group, output, step.finished, results, artifacts)
are queued in order and committed by the store's writer meanwhile; the journal's order
makes each of them durable before anything queued after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pluggy

from flwd.engine.artifacts import collect_artifacts
from flwd.engine.executor import (
    Outcome,
    StepContext,
    StopSignal,
    execute_step,
    fit_environment,
    inherited_environment,
    step_environment,
)
from flwd.engine.output import Redactor, RunOutput
from flwd.engine.processes import (
    EscapedProcesses,
    group_members,
    reap_adopted,
    terminate,
    unwaited_children,
)
from flwd.engine.workdirs import WorkDirs
from flwd.errors import StorageError
from flwd.events.journal import Journal
from flwd.jobs.steps import SHELL, job_dir_hint, job_files_named
from flwd.models import JobSpec, Result, Run, StepSpec, utcnow
from flwd.settings import Settings
from flwd.states import FailureReason, RunStatus, StepStatus
from flwd.storage import runs as rows

log = logging.getLogger(__name__)
_RESULT_LIMIT = 4 * 1024 * 1024
#: a step's process group id is stored once it has run this long (see `_run_step`)
_STORE_PGID_AFTER = 0.05


@dataclass
class ActiveRun:
    """A run this process is executing or about to execute (held only in memory)."""

    run: Run
    job: JobSpec
    args: dict[str, Any]
    redactor: Redactor
    concurrency_key: str | None = None
    stop: StopSignal = field(default_factory=StopSignal)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    shutting_down: bool = False
    timed_out: bool = False
    pgids: list[int] = field(default_factory=list)
    #: the commit of `run.created`, for a run queued before it was durable
    created: asyncio.Future[None] | None = None
    started_at: datetime | None = None
    #: commits of `step.started` (attempt 0) posted when the run started, by step id
    step_started: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    #: the run as stored by its `run.finished`, once committed
    final: Run | None = None


class RunExecutor:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        pm: pluggy.PluginManager,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.pm = pm
        self.work_root = settings.data_path / "work"
        self.blob_root = settings.data_path / "artifacts"
        self._base_env = inherited_environment()
        #: escaped processes are found among this process's children (see processes.py)
        self.adopting = False
        self.workdirs = WorkDirs(self.work_root, spares=min(settings.max_concurrency, 64))

    def begin(self, active: ActiveRun) -> None:
        """Queue `run.started`, and `step.started` of the steps that need none, at once
        when the run gets its slot: for a run that starts as it is created they share
        the commit of `run.created`, which is awaited anyway."""
        run, job = active.run, active.job
        active.started_at = utcnow()
        self.journal.post(
            "run.started",
            run.run_id,
            job.id,
            {"status": "running"},
            statements=[
                rows.update_run(run.run_id, status="running", started_at=active.started_at)
            ],
            wait=False,
        )
        for step in job.steps:
            if not step.needs:
                active.step_started[step.id] = self._post_step_started(active, step, 0)

    def _post_step_started(
        self, active: ActiveRun, step: StepSpec, attempt: int
    ) -> asyncio.Future[None]:
        run = active.run
        future = self.journal.post(
            "step.started",
            run.run_id,
            active.job.id,
            {"step_id": step.id, "attempt": attempt},
            statements=[
                rows.update_step(
                    run.run_id, step.id, status="running", attempt=attempt, started_at=utcnow()
                )
            ],
        )
        assert future is not None
        future.add_done_callback(_retrieve)  # a step never run must not log its failure
        return future

    async def execute(self, active: ActiveRun) -> None:
        run, job = active.run, active.job
        # paths are strings on the way of every run: pathlib objects cost more than the
        # rest of building a step's environment
        workdir = f"{self.work_root}/{run.run_id}"
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
        failures = self.journal.store.failures
        try:
            if active.started_at is None:
                self.begin(active)
            self.workdirs.open(workdir, active.args)
            if job.timeout:
                timer = asyncio.get_running_loop().call_later(job.timeout, _time_out, active)
            await self._run_dag(active, workdir, output, outcomes, results)
        except Exception as exc:  # a bug or a storage failure: still end the run properly
            log.exception("run %s failed inside flwd", run.run_id)
            error = active.redactor.mask_text(f"internal error: {exc}")
        finally:
            if timer is not None:
                timer.cancel()
            if error is None and self.journal.store.failures != failures:
                error = "internal error: a storage write failed while the run was active"
            await self._finish(active, workdir, output, outcomes, results, error)

    async def _run_dag(
        self,
        active: ActiveRun,
        workdir: str,
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
                    self._skip_dependants(active, step.id, steps, state, outcomes)
        for step_id, status in state.items():
            if status is StepStatus.PENDING:  # never started: the run was stopped
                outcomes[step_id] = Outcome(status=StepStatus.CANCELLED)
                self._step_finished(active, step_id, outcomes[step_id], attempt=0)

    def _skip_dependants(
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
                    self._step_finished(active, step.id, outcomes[step.id], attempt=0)

    async def _run_step(
        self,
        active: ActiveRun,
        step: StepSpec,
        workdir: str,
        output: RunOutput,
        results: dict[str, Any],
    ) -> Outcome:
        run, job = active.run, active.job
        result_file = f"{workdir}/.flwd/results/{step.id}.json"
        outcome = Outcome(status=StepStatus.CANCELLED)
        for attempt in range(step.retries + 1):
            flwd_env = {
                "FLWD_RUN_ID": run.run_id,
                "FLWD_JOB_ID": job.id,
                "FLWD_STEP_ID": step.id,
                "FLWD_ATTEMPT": str(attempt),
                "FLWD_RUN_DIR": workdir,
                "FLWD_JOB_DIR": job.path,
                "FLWD_ARGS_FILE": f"{workdir}/.flwd/args.json",
                "FLWD_RESULT_FILE": result_file,
                "FLWD_ARTIFACTS_DIR": f"{workdir}/.flwd/artifacts",
            }
            ctx = StepContext(
                run=run,
                job=job,
                step=step,
                settings=self.settings,
                attempt=attempt,
                argv=list(step.argv),
                cwd=workdir,
                env=step_environment(self._base_env, job, step, active.args, flwd_env),
            )
            started = active.step_started.pop(step.id, None) if attempt == 0 else None
            if started is None:
                started = self._post_step_started(active, step, attempt)
            self.pm.hook.prepare_step(context=ctx)
            left_out = fit_environment(ctx.argv, ctx.env)
            if left_out and attempt == 0:
                await output.note(_left_out_note(left_out), step_id=step.id)
            # durable before the process starts: after a crash the run is found running
            # and its processes are killed, instead of it being queued and run again
            await started

            stored_later: list[asyncio.TimerHandle] = []
            if active.created is not None and not _committed(active.created):
                raise StorageError("the run could not be stored; it was not started")
            try:
                outcome = await execute_step(
                    ctx,
                    output=output,
                    stop=active.stop,
                    timeout=step.timeout,
                    grace=self.settings.kill_grace,
                    on_spawn=functools.partial(self._record_pgid, active, step.id, stored_later),
                )
            finally:
                for handle in stored_later:
                    handle.cancel()
            if outcome.status is StepStatus.SUCCESS:
                outcome = await self._collect_result(active, step, result_file, results, outcome)
            elif outcome.reason in (FailureReason.EXIT_CODE, FailureReason.ERROR):
                outcome = _with_job_dir_hint(outcome, step, job, workdir)
            last = outcome.status is not StepStatus.FAILED or attempt == step.retries
            self._step_finished(
                active,
                step.id,
                outcome,
                attempt=attempt,
                retrying=not last and not active.stop.is_set(),
            )
            if last or active.stop.is_set():
                return outcome
            with contextlib.suppress(FileNotFoundError):
                os.unlink(result_file)
        return outcome

    def _record_pgid(
        self, active: ActiveRun, step_id: str, timers: list[asyncio.TimerHandle], pgid: int
    ) -> None:
        active.pgids.append(pgid)
        # for crash recovery, stored once the step has run a while (not waited for): after
        # a crash the run's processes are found by its id anyway
        timers.append(
            asyncio.get_running_loop().call_later(
                _STORE_PGID_AFTER, self._store_pgid, active.run.run_id, step_id, pgid
            )
        )

    def _store_pgid(self, run_id: str, step_id: str, pgid: int) -> None:
        try:
            self.journal.store.write([rows.update_step(run_id, step_id, pgid=pgid)], wait=False)
        except StorageError:
            log.exception("could not store the process group of run %s", run_id)

    async def _collect_result(
        self,
        active: ActiveRun,
        step: StepSpec,
        path: str,
        results: dict[str, Any],
        outcome: Outcome,
    ) -> Outcome:
        problem: str | None = None
        if not os.path.lexists(path):  # most steps write none: no hop to a thread
            return outcome
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
        self.journal.post(
            "step.output",
            active.run.run_id,
            active.job.id,
            {"step_id": step.id, "value": value},
            statements=[
                rows.update_step(active.run.run_id, step.id, result=msgspec.json.encode(value))
            ],
            wait=False,
        )
        return outcome

    def _step_finished(
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
        self.journal.post(
            "step.finished",
            active.run.run_id,
            active.job.id,
            data,
            statements=[rows.update_step(active.run.run_id, step_id, **fields)],
            wait=False,
        )

    async def _finish(
        self,
        active: ActiveRun,
        workdir: str,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
        error: str | None,
    ) -> None:
        run, job = active.run, active.job
        try:
            await self._stop_escaped(active)
            await output.finish()
            artifacts_dir = f"{workdir}/.flwd/artifacts"
            if _has_entries(artifacts_dir):
                artifacts = await collect_artifacts(
                    Path(artifacts_dir), self.blob_root, run.run_id, active.redactor
                )
                for artifact in artifacts:
                    self.journal.store.write([rows.insert_artifact(artifact)], wait=False)
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
            try:
                finished = self.journal.post(
                    "run.finished",
                    run.run_id,
                    job.id,
                    event,
                    statements=[rows.update_run(run.run_id, **fields)],
                )
            finally:
                # out of the way (secret arguments blanked) while the commit is in flight
                self._discard_workdir(workdir, active)
            assert finished is not None
            await finished
            active.final = msgspec.structs.replace(
                run,
                status=RunStatus(fields["status"]),
                reason=FailureReason(fields["reason"]) if fields.get("reason") else None,
                error=fields.get("error"),
                exit_code=fields.get("exit_code"),
                signal=fields.get("signal"),
                result=result,
                started_at=active.started_at,
                finished_at=fields["finished_at"],
            )
        finally:
            active.done.set()

    def _discard_workdir(self, workdir: str, active: ActiveRun) -> None:
        try:
            self.workdirs.discard(workdir, secret=bool(active.redactor))
        except Exception:
            log.exception("could not put away the work dir of run %s", active.run.run_id)

    async def _stop_escaped(self, active: ActiveRun) -> None:
        """Stop the processes that left their step's group but belong to this run."""
        grace = self.settings.kill_grace
        run_id = active.run.run_id
        # a group with a survivor (stuck in the kernel) may still be the parent of an
        # escaped process, which is then not among our children: scan everything
        if self.adopting and not any(group_members(pgid) for pgid in active.pgids):
            if not unwaited_children():
                return  # the common case: nothing left the groups, nothing to reap
            await terminate(None, run_id=run_id, grace=grace, find=EscapedProcesses(run_id))
            reap_adopted()
        else:
            await terminate(None, run_id=run_id, grace=grace)

    async def aclose(self) -> None:
        await self.workdirs.aclose()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _committed(future: asyncio.Future[None]) -> bool:
    # done by now: it was queued before this run's step.started, whose commit we awaited
    return future.done() and not future.cancelled() and future.exception() is None


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def _with_job_dir_hint(outcome: Outcome, step: StepSpec, job: JobSpec, workdir: str) -> Outcome:
    """A failed step whose command names files of the job folder by relative paths, which
    are not in the run dir either, is told why (looked at only when a step fails)."""
    missing = [
        name
        for name in job_files_named(step.argv, job.path)
        if not os.path.exists(os.path.join(workdir, name))
    ]
    if not missing:
        return outcome
    hint = job_dir_hint(missing, shell=list(step.argv[:2]) == list(SHELL))
    return msgspec.structs.replace(outcome, error=f"{outcome.error}; {hint}")


def _left_out_note(names: list[str]) -> str:
    them = "it" if len(names) == 1 else "them"
    return (
        f"[flwd: {', '.join(names)} left out of the environment: too large for it (Linux "
        f"takes at most 128 KiB per variable, ARG_MAX in all); read {them} from $FLWD_ARGS_FILE]"
    )


def _time_out(active: ActiveRun) -> None:
    active.timed_out = True
    active.stop.set()


class _ResultProblem(Exception):
    pass


def _read_result(path: str) -> bytes | None:
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
