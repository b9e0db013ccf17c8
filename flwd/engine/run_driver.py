"""Drive one run from its start to its terminal state: its steps in the order of their
`needs` (`flwd.engine.dag`), each attempt with its retries (a step's process itself is
`flwd.engine.step_process`), timeouts and cancel, the process groups recorded for crash
recovery and the escaped processes stopped, its results (`flwd.engine.results`), its
artifacts, and how it ended (`flwd.engine.final_status`).

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
from typing import Any

import msgspec
import pluggy

from flwd.defaults import PLUGIN_NAME as DEFAULTS
from flwd.engine.active_run import ActiveRun
from flwd.engine.artifacts import collect_artifacts
from flwd.engine.containment import Containment
from flwd.engine.dag import StepOrder
from flwd.engine.environment import fit_environment, inherited_environment, step_environment
from flwd.engine.final_status import (
    ENDS_EVERY_STEP,
    STOPPED_BY_INTERNAL,
    failure,
    terminal_fields,
)
from flwd.engine.output import RunOutput
from flwd.engine.processes import (
    EscapedProcesses,
    adopted_children,
    group_members,
    reap_adopted,
    terminate,
)
from flwd.engine.results import checked_result, collect_result
from flwd.engine.rooms import Room
from flwd.engine.step_process import LOCAL, Outcome, StepContext, StepExecutor, StepRefused
from flwd.engine.workdirs import WorkDirs
from flwd.errors import StorageError
from flwd.events.journal import Journal
from flwd.jobs.steps import SHELL, job_dir_hint, job_files_named
from flwd.models import JobSpec, StepSpec, utcnow
from flwd.settings import Settings
from flwd.states import FailureReason, RunStatus, StepStatus
from flwd.storage import runs as rows

log = logging.getLogger(__name__)
#: a step's process group id is stored once it has run this long (see `_run_step`)
_STORE_PGID_AFTER = 0.05


class RunDriver:
    """Drives each run this process executes, from its start to its terminal state."""

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
            await self._run_steps(active, room, output, outcomes, results)
        except Exception as exc:  # a bug or a storage failure: still end the run properly
            error, error_reason = failure(active, exc, "failed inside flwd")
        finally:
            if timer is not None:
                timer.cancel()
            if error is None and self.journal.store.failures != failures:
                error = "internal error: a storage write failed while the run was active"
            await self._finish(active, room, output, outcomes, results, error, error_reason)

    async def _run_steps(
        self,
        active: ActiveRun,
        room: Room,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
    ) -> None:
        """The run's steps: a job of one step (the common job) has it awaited right here,
        without the task and the wait `_run_dag` makes for each step (one pass of the
        event loop fewer at the end of each run); a failure of flwd in it ends the step
        `internal` in `_finish`, as with several steps."""
        if len(active.job.steps) == 1 and not active.stop.is_set():
            step = active.job.steps[0]
            outcomes[step.id] = await self._run_step(active, step, room, output, results)
        else:
            await self._run_dag(active, room, output, outcomes, results)

    async def _run_dag(
        self,
        active: ActiveRun,
        room: Room,
        output: RunOutput,
        outcomes: dict[str, Outcome],
        results: dict[str, Any],
    ) -> None:
        order = StepOrder(active.job.steps)
        running: dict[asyncio.Task[Outcome], StepSpec] = {}
        crashed: BaseException | None = None
        while True:
            if not active.stop.is_set():
                for step in order.ready():
                    task = asyncio.create_task(self._run_step(active, step, room, output, results))
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
                    order.ended(step.id, StepStatus.FAILED)
                    continue
                outcome = task.result()
                order.ended(step.id, outcome.status)
                outcomes[step.id] = outcome
                if outcome.status is StepStatus.FAILED:
                    for skipped in order.skip_dependants(step.id):
                        outcomes[skipped] = Outcome(
                            status=StepStatus.SKIPPED,
                            reason=FailureReason.DEPENDENCY_FAILED,
                            error=f"skipped because step '{step.id}' failed",
                        )
                        self._step_finished(active, skipped, outcomes[skipped], attempt=0)
        if crashed is not None:
            raise crashed
        for step_id in order.never_started():  # the run was stopped before they started
            outcomes[step_id] = Outcome(status=StepStatus.CANCELLED)
            self._step_finished(active, step_id, outcomes[step_id], attempt=0)

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
            try:
                self.pm.hook.prepare_step(context=ctx)
            except StepRefused as exc:
                ctx.refused = str(exc)
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
                outcome = await collect_result(self.journal, active, step, room, results, outcome)
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
                error=STOPPED_BY_INTERNAL,
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
                error, error_reason = failure(active, exc, "could not be finished")
        try:
            if error is None and not active.ended_steps.issuperset(s.id for s in job.steps):
                error = "internal error: a step of the run was never reported finished"
            fields, result = terminal_fields(active, outcomes, error, error_reason), None
            if results:
                fields, result = checked_result(active, fields, results)
        except Exception as exc:
            if error is None:
                error, error_reason = failure(active, exc, "could not be finished")
            fields, result = terminal_fields(active, outcomes, error, error_reason), None
        if fields.get("reason") in ENDS_EVERY_STEP:
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
