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
import functools
import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema
import msgspec
import pluggy

from flwd.defaults import PLUGIN_NAME as DEFAULTS
from flwd.engine.artifacts import collect_artifacts
from flwd.engine.containment import Containment, RunCgroup
from flwd.engine.executor import (
    LOCAL,
    Outcome,
    StepContext,
    StepExecutor,
    StopSignal,
    fit_environment,
    inherited_environment,
    step_environment,
)
from flwd.engine.output import Redactor, RunOutput
from flwd.engine.processes import (
    EscapedProcesses,
    adopted_children,
    group_members,
    reap_adopted,
    terminate,
)
from flwd.engine.rooms import Room, UnsafeEntry
from flwd.engine.workdirs import WorkDirs
from flwd.errors import StorageError
from flwd.events.journal import Journal
from flwd.jobs.steps import SHELL, job_dir_hint, job_files_named
from flwd.models import JobSpec, Result, Run, StepSpec, utcnow
from flwd.settings import Settings
from flwd.states import FailureReason, RunStatus, StepStatus, failure_reason_of
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
    #: steps whose terminal `step.finished` was posted
    ended_steps: set[str] = field(default_factory=set)
    #: set when flwd itself failed: the steps still running are stopped and end `internal`
    failing: bool = False
    #: where the run's processes are kept (cgroup mode), from its start to its end
    cgroup: RunCgroup | None = None
    #: what `resolve_profile` answered for the run (`StepContext.profile`)
    profile: Any = None


class RunExecutor:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        pm: pluggy.PluginManager,
        containment: Containment | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.pm = pm
        self.containment = containment or Containment("subreaper")
        #: ids of the runs being executed, from `execute` until their end is written
        self.active_ids: set[str] = set()
        self.work_root = settings.data_path / "work"
        self.blob_root = settings.data_path / "artifacts"
        self._base_env = inherited_environment()
        #: escaped processes are found among this process's children (see processes.py)
        self.adopting = False
        self.workdirs = WorkDirs(self.work_root, spares=min(settings.max_concurrency, 32))
        # with no extension choosing executors, no `resolve_executor` call per step
        self._choose_executor = any(
            impl.plugin_name != DEFAULTS for impl in pm.hook.resolve_executor.get_hookimpls()
        )

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
        room: Room | None = None
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
        error_reason = FailureReason.INTERNAL
        failures = self.journal.store.failures
        self.active_ids.add(run.run_id)
        active.cgroup = self.containment.run_cgroup(run.run_id)
        try:
            active.profile = self.pm.hook.resolve_profile(job=job, settings=self.settings)
            if active.started_at is None:
                self.begin(active)
            room = await self.workdirs.open(run.run_id, active.args, secret=bool(active.redactor))
            if job.timeout:
                timer = asyncio.get_running_loop().call_later(job.timeout, _time_out, active)
            await self._run_dag(active, room, output, outcomes, results)
        except Exception as exc:  # a bug or a storage failure: still end the run properly
            error, error_reason = _failure(active, exc, "failed inside flwd")
        finally:
            if timer is not None:
                timer.cancel()
            if error is None and self.journal.store.failures != failures:
                error = "internal error: a storage write failed while the run was active"
            await self._finish(active, room, output, outcomes, results, error, error_reason)

    async def _run_dag(
        self,
        active: ActiveRun,
        room: Room,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
    ) -> None:
        steps = {step.id: step for step in active.job.steps}
        state = dict.fromkeys(steps, StepStatus.PENDING)
        running: dict[asyncio.Task[Outcome], StepSpec] = {}
        crashed: BaseException | None = None
        while True:
            if not active.stop.is_set():
                for step in steps.values():
                    ready = all(state[n] is StepStatus.SUCCESS for n in step.needs)
                    if state[step.id] is StepStatus.PENDING and ready:
                        state[step.id] = StepStatus.RUNNING
                        task = asyncio.create_task(
                            self._run_step(active, step, room, output, results)
                        )
                        running[task] = step
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                step = running.pop(task)
                if task.exception() is not None:
                    # flwd failed in this step: stop the others, wait for them to end,
                    # then let the run end `internal` (see `_finish`)
                    crashed = crashed or task.exception()
                    active.failing = True
                    active.stop.set()
                    state[step.id] = StepStatus.FAILED
                    continue
                outcome = task.result()
                state[step.id] = outcome.status
                outcomes[step.id] = outcome
                if outcome.status is StepStatus.FAILED:
                    self._skip_dependants(active, step.id, steps, state, outcomes)
        if crashed is not None:
            raise crashed
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
        room: Room,
        output: RunOutput,
        results: dict[str, Any],
    ) -> Outcome:
        run, job = active.run, active.job
        result_file = room.result_file(step.id)
        outcome = Outcome(status=StepStatus.CANCELLED)
        for attempt in range(step.retries + 1):
            flwd_env = {
                "FLWD_RUN_ID": run.run_id,
                "FLWD_JOB_ID": job.id,
                "FLWD_STEP_ID": step.id,
                "FLWD_ATTEMPT": str(attempt),
                "FLWD_RUN_DIR": room.run_dir,
                "FLWD_JOB_DIR": job.path,
                "FLWD_ARGS_FILE": room.args_file,
                "FLWD_RESULT_FILE": result_file,
                "FLWD_ARTIFACTS_DIR": room.artifacts_dir,
            }
            ctx = StepContext(
                run=run,
                job=job,
                step=step,
                settings=self.settings,
                attempt=attempt,
                argv=list(step.argv),
                cwd=room.run_dir,
                env=step_environment(self._base_env, job, step, active.args, flwd_env),
                profile=active.profile,
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
            executor: StepExecutor = (
                self.pm.hook.resolve_executor(context=ctx) if self._choose_executor else LOCAL
            )
            try:
                outcome = await executor.execute(
                    ctx,
                    output=output,
                    stop=active.stop,
                    timeout=step.timeout,
                    grace=self.settings.kill_grace,
                    on_spawn=functools.partial(self._record_pgid, active, step.id, stored_later),
                    place=active.cgroup.place if active.cgroup is not None else None,
                )
            finally:
                for handle in stored_later:
                    handle.cancel()
            if outcome.status is StepStatus.SUCCESS:
                outcome = await self._collect_result(active, step, room, results, outcome)
            elif outcome.reason in (FailureReason.EXIT_CODE, FailureReason.ERROR):
                outcome = _with_job_dir_hint(outcome, step, job, room.run_dir)
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
            room.remove_result(step.id)
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
        room: Room,
        results: dict[str, Any],
        outcome: Outcome,
    ) -> Outcome:
        problem: str | None = None
        if not room.result_written(step.id):  # most steps write none: no hop to a thread
            return outcome
        try:
            raw = await asyncio.to_thread(room.read_result, step.id, _RESULT_LIMIT)
            if raw is None:
                return outcome
            value = msgspec.json.decode(raw)
            # kept as parsed, for the run's result_schema; only masked copies leave
            masked = active.redactor.value(value)
        except UnsafeEntry as exc:
            problem = str(exc)
        except msgspec.DecodeError as exc:
            problem = f"result file is not valid JSON: {exc}"
        except RecursionError:
            problem = "result file is nested too deeply (arrays or objects within each other)"
        if problem is not None:
            return Outcome(
                status=StepStatus.FAILED,
                reason=FailureReason.ERROR,
                exit_code=0,
                error=active.redactor.mask_text(problem),
            )
        results[step.id] = value
        self.journal.post(
            "step.result",
            active.run.run_id,
            active.job.id,
            {"step_id": step.id, "value": masked},
            statements=[
                rows.update_step(active.run.run_id, step.id, result=msgspec.json.encode(masked))
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
        if active.failing and outcome.status is StepStatus.CANCELLED:
            # stopped because flwd failed elsewhere in the run, not by anyone's cancel
            outcome = Outcome(
                status=StepStatus.FAILED,
                reason=FailureReason.INTERNAL,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                error=_STOPPED_BY_INTERNAL,
            )
        if not retrying:
            active.ended_steps.add(step_id)
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
        room: Room | None,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
        error: str | None,
        error_reason: FailureReason = FailureReason.INTERNAL,
    ) -> None:
        run, job = active.run, active.job
        try:
            await self._stop_escaped(active)
            await output.finish()
            if room is not None and room.has_artifacts():
                collected = await collect_artifacts(
                    room, self.blob_root, run.run_id, active.redactor
                )
                for artifact in collected.artifacts:
                    self.journal.store.write([rows.insert_artifact(artifact)], wait=False)
                for note in collected.notes():
                    await output.note(note)
        except Exception as exc:
            if error is None:
                error, error_reason = _failure(active, exc, "could not be finished")
        try:
            if error is None and not active.ended_steps.issuperset(s.id for s in job.steps):
                error = "internal error: a step of the run was never reported finished"
            fields, result = _terminal_fields(active, outcomes, error, error_reason), None
            if results:
                fields, result = self._checked_result(active, fields, results)
        except Exception as exc:
            if error is None:
                error, error_reason = _failure(active, exc, "could not be finished")
            fields, result = _terminal_fields(active, outcomes, error, error_reason), None
        if fields.get("reason") in _ENDS_EVERY_STEP:
            self._end_remaining_steps(active)
        fields["finished_at"] = utcnow()
        if result is not None:
            fields["result"] = msgspec.json.encode(result)
        event = {
            k: v
            for k, v in fields.items()
            if k in ("status", "reason", "error", "exit_code", "signal")
        }
        try:
            removed: asyncio.Future[None] | None = None
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
                removed = self._discard_room(active, room)
            assert finished is not None
            await finished
            if removed is not None:
                await removed
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
            self.active_ids.discard(run.run_id)
            active.done.set()

    def _checked_result(
        self, active: ActiveRun, fields: dict[str, Any], results: dict[str, Any]
    ) -> tuple[dict[str, Any], Result]:
        """The run's result, checked against the job's `result_schema` as the steps wrote
        it, then masked: secrets never corrupt a value nor make it fail its schema."""
        job, redactor = active.job, active.redactor
        order = [step.id for step in job.steps if step.id in results]
        value = results[order[-1]]
        if fields["status"] == RunStatus.SUCCESS.value and job.result_schema:
            problems = _schema_problems(job.result_schema, value, redactor)
            if problems:
                fields = {
                    "status": RunStatus.FAILED.value,
                    "reason": FailureReason.ERROR.value,
                    "error": "result does not match result_schema: " + "; ".join(problems),
                }
        masked = {k: redactor.value(results[k]) for k in order}
        return fields, Result(value=masked[order[-1]], steps=masked)

    def _end_remaining_steps(self, active: ActiveRun) -> None:
        """After flwd failed: every step not ended yet ends `failed`/`internal`."""
        for step in active.job.steps:
            if step.id in active.ended_steps:
                continue
            try:
                active.failing = True
                self._step_finished(
                    active, step.id, Outcome(status=StepStatus.CANCELLED), attempt=0
                )
            except Exception:
                log.exception("could not end step %s of run %s", step.id, active.run.run_id)

    def _discard_room(self, active: ActiveRun, room: Room | None) -> asyncio.Future[None] | None:
        """Put the run's room away; with secret arguments (which its results, artifact
        names or other files may hold unmasked), the deletion to wait for before the run
        is reported finished."""
        try:
            return self.workdirs.discard(active.run.run_id, room, now=bool(active.redactor))
        except Exception:
            log.exception("could not put away the work dir of run %s", active.run.run_id)
            return None

    async def _stop_escaped(self, active: ActiveRun) -> None:
        """Stop the processes that left their step's group but belong to this run: its
        cgroup's (cgroup mode), then those the subreaper adopted (in cgroup mode, only a
        process orphaned before its step was moved into the cgroup can be one)."""
        grace = self.settings.kill_grace
        run_id = active.run.run_id
        if active.cgroup is not None:
            await active.cgroup.stop(grace)
        # a group with a survivor (stuck in the kernel) may still be the parent of an
        # escaped process, which is then not among our children: scan everything
        if self.adopting and not any(group_members(pgid) for pgid in active.pgids):
            if not adopted_children():
                return  # the common case: nothing left the groups, nothing to reap
            find = EscapedProcesses(run_id, self.active_ids)
            await terminate(None, run_id=run_id, grace=grace, find=find)
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


def _with_job_dir_hint(outcome: Outcome, step: StepSpec, job: JobSpec, run_dir: str) -> Outcome:
    """A failed step whose command names files of the job folder by relative paths, which
    are not in the run dir either, is told why (looked at only when a step fails)."""
    missing = [
        name
        for name in job_files_named(step.argv, job.path)
        if not os.path.exists(os.path.join(run_dir, name))
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


#: Reasons a run ends with before all its steps did: each step not ended yet ends too.
_ENDS_EVERY_STEP = frozenset(
    {FailureReason.INTERNAL.value, FailureReason.RESOURCES_EXHAUSTED.value}
)

_STOPPED_BY_INTERNAL = "stopped: flwd failed internally while running this run (see its error)"


def _failure(active: ActiveRun, exc: BaseException, what: str) -> tuple[str, FailureReason]:
    """The error and reason of a run that flwd could not carry through: the machine out
    of descriptors, processes or memory (`resources_exhausted`, logged in one line), or
    flwd itself failing (`internal`, its traceback logged)."""
    if failure_reason_of(exc) is FailureReason.RESOURCES_EXHAUSTED:
        log.error("run %s %s: %s", active.run.run_id, what, exc)
        message = f"the server is out of file descriptors, processes or memory: {exc}"
        return active.redactor.mask_text(message), FailureReason.RESOURCES_EXHAUSTED
    return _internal_error(active, exc, what), FailureReason.INTERNAL


def _internal_error(active: ActiveRun, exc: BaseException, what: str) -> str:
    """Log a failure of flwd itself (its traceback with secrets masked) and return the
    run's error message, which names no secret of any length."""
    trace = "".join(traceback.format_exception(exc))
    log.error("run %s %s:\n%s", active.run.run_id, what, active.redactor.mask_text(trace))
    message = active.redactor.mask_text(f"internal error: {type(exc).__name__}: {exc}")
    if active.redactor.reveals(message):
        message = f"internal error: {type(exc).__name__} (details in the server log)"
    return message


def _schema_problems(schema: dict[str, Any], value: Any, redactor: Redactor) -> list[str]:
    """What is wrong with a result, as `pointer: message`; a message that would quote a
    secret is replaced by a generic one."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(value):
        path = "/".join(str(redactor.value(p)) for p in error.absolute_path)
        message = str(error.message)
        if redactor.reveals(message):
            message = f"the value does not satisfy '{error.validator}' of the schema"
        problems.append(f"/{path}: {message}")
    return problems


def _terminal_fields(
    active: ActiveRun,
    outcomes: dict[str, Outcome],
    error: str | None,
    error_reason: FailureReason = FailureReason.INTERNAL,
) -> dict[str, Any]:
    if error is not None:
        return {
            "status": RunStatus.FAILED.value,
            "reason": error_reason.value,
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
