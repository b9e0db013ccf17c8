"""Start-up recovery: what a previous life of the engine left behind.

Runs found `running` were being executed by a process that is gone (killed, crashed, power
lost): their processes are terminated and they become `failed` with reason `lost`. Runs
found `pending` never started; they are queued again, unless they need secret arguments,
which are never stored and so cannot be recovered. Steps found `pending` or `running` in a
run that already ended (flwd failed while finishing it) are ended too: `failed` with reason
`internal`, their processes terminated, each with its `step.finished` event.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from flwd.engine.active_run import ActiveRun
from flwd.engine.containment import Containment
from flwd.engine.output import Redactor
from flwd.engine.processes import group_members, run_processes, terminate
from flwd.engine.scheduler import concurrency_key
from flwd.errors import FlwdError, JobNotFound
from flwd.events.journal import Journal
from flwd.models import JobSpec, Run, utcnow
from flwd.states import FailureReason, RunStatus, StepStatus
from flwd.storage import runs as rows
from flwd.storage.runs import RunRepository
from flwd.timefmt import iso

log = logging.getLogger(__name__)

LOST_MESSAGE = "the flwd process running this run stopped unexpectedly (killed or crashed)"


async def recover_lost_runs(
    repo: RunRepository,
    journal: Journal,
    grace: float,
    containment: Containment | None = None,
) -> list[Run]:
    """Kill what is left of runs marked `running` and mark them `failed`/`lost`.

    Every leftover is stopped at once (SIGTERM to all, one grace period, SIGKILL to what
    remains): recovery, and with it the server's start, takes about one grace period
    however many runs were lost. Left-over run cgroups (`containment`) are killed too."""
    lost = await repo.with_status(RunStatus.RUNNING)
    stopping = [_stop_lost(repo, run, grace) for run in lost]
    if containment is not None:
        stopping.append(containment.stop_leftovers(grace))
    await asyncio.gather(*stopping)
    for run in lost:
        now = utcnow()
        await journal.append(
            "run.finished",
            run.run_id,
            run.job_id,
            {"status": "failed", "reason": FailureReason.LOST.value, "error": LOST_MESSAGE},
            statements=[
                (
                    "UPDATE steps SET status = 'failed', reason = 'lost', pgid = NULL, "
                    "finished_at = ? WHERE run_id = ? AND status = 'running'",
                    (iso(now), run.run_id),
                ),
                (
                    "UPDATE steps SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'",
                    (run.run_id,),
                ),
                rows.update_run(
                    run.run_id,
                    status=RunStatus.FAILED.value,
                    reason=FailureReason.LOST.value,
                    error=LOST_MESSAGE,
                    finished_at=now,
                ),
            ],
        )
        log.warning("run %s was left running by a previous flwd process: marked lost", run.run_id)
    return lost


REPAIRED_MESSAGE = (
    "flwd did not record how this step ended (it failed while finishing the run); ended at start-up"
)


async def repair_unended_steps(repo: RunRepository, journal: Journal, grace: float) -> int:
    """End the steps left `pending`/`running` in runs that are already terminal; returns
    how many were repaired."""
    repaired = 0
    for run_id, job_id, step_id, attempt, pgid in await repo.unended_steps_of_ended_runs():
        if pgid is not None and set(run_processes(run_id)).intersection(group_members(pgid)):
            await terminate(pgid, grace=grace)
        await journal.append(
            "step.finished",
            run_id,
            job_id,
            {
                "step_id": step_id,
                "status": StepStatus.FAILED.value,
                "attempt": attempt,
                "reason": FailureReason.INTERNAL.value,
                "exit_code": None,
                "signal": None,
                "error": REPAIRED_MESSAGE,
            },
            statements=[
                rows.update_step(
                    run_id,
                    step_id,
                    status=StepStatus.FAILED.value,
                    reason=FailureReason.INTERNAL.value,
                    error=REPAIRED_MESSAGE,
                    finished_at=utcnow(),
                    pgid=None,
                )
            ],
        )
        log.warning("step %s of ended run %s was never ended: repaired", step_id, run_id)
        repaired += 1
    return repaired


async def _stop_lost(repo: RunRepository, run: Run, grace: float) -> None:
    """Stop the process groups and stray processes of one lost run, all at once."""
    strays = set(run_processes(run.run_id))
    # the id may have been reused by an unrelated process group since the crash
    pgids = [p for p in await repo.step_pgids(run.run_id) if strays.intersection(group_members(p))]
    await asyncio.gather(
        *(terminate(pgid, grace=grace) for pgid in pgids),
        terminate(None, run_id=run.run_id, grace=grace),
    )


def clean_work_root(work_root: Path, keep: set[str]) -> None:
    """Remove work directories of runs that are not active (they may hold secret args)."""
    if not work_root.is_dir():
        return
    for entry in work_root.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


async def requeue_pending(
    repo: RunRepository,
    journal: Journal,
    job_of: Callable[[str], JobSpec],
    submit: Callable[[ActiveRun], None],
) -> None:
    """Queue again (`submit`) the runs found `pending`, which never started; one whose job
    is gone or invalid (`job_of` raises), or that needs secret arguments, ends `failed`
    with reason `lost` instead."""
    for run in await repo.with_status(RunStatus.PENDING):
        reason: str | None = None
        job: JobSpec | None = None
        try:
            job = job_of(run.job_id)
        except (JobNotFound, FlwdError) as exc:
            reason = f"cannot resume after restart: {exc.detail}"
        if job is not None and await repo.has_secrets(run.run_id):
            reason = "cannot resume after restart: its secret arguments are never stored"
        if reason is not None or job is None:
            await journal.append(
                "run.finished",
                run.run_id,
                run.job_id,
                {"status": "failed", "reason": FailureReason.LOST.value, "error": reason},
                statements=[
                    rows.update_run(
                        run.run_id,
                        status=RunStatus.FAILED.value,
                        reason=FailureReason.LOST.value,
                        error=reason,
                        finished_at=utcnow(),
                    )
                ],
            )
            continue
        submit(
            ActiveRun(
                run=run,
                job=job,
                args=dict(run.args),
                redactor=Redactor([]),
                concurrency_key=concurrency_key(
                    job.concurrency.key if job.concurrency else None, run.args
                ),
            )
        )
